"""Reading user data for the CLI: ``.npz`` and ``.pt`` files into (inputs, labels-or-None) batches."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._errors import DataError

_INPUT_KEYS = ("x", "X", "inputs", "input", "data", "images", "features")
_LABEL_KEYS = ("y", "Y", "labels", "label", "targets", "target")


def _pick(mapping: dict[str, Any], path: Path) -> tuple[Any, Any]:
    if not mapping:
        raise DataError(f"{path} holds no arrays")
    x_key = next((k for k in _INPUT_KEYS if k in mapping), next(iter(mapping)))
    y_key = next((k for k in _LABEL_KEYS if k in mapping and k != x_key), None)
    return mapping[x_key], (mapping[y_key] if y_key else None)


def _load_npz(path: Path) -> tuple[Any, Any]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return _pick({k: npz[k] for k in npz.files}, path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as a NumPy .npz file: {exc}") from None


def _load_pt(path: Path) -> tuple[Any, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise DataError(f"cannot read {path} as a torch file (tensors only, weights_only=True): {exc}") from None
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, dict):
        return _pick(obj, path)
    if isinstance(obj, (tuple, list)) and obj:
        return obj[0], (obj[1] if len(obj) > 1 else None)
    raise DataError(
        f"{path} must hold a tensor, a (inputs, labels) pair or a dict of tensors, not {type(obj).__name__}"
    )


def load_arrays(path: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs (as float32 unless already floating) and labels from an ``.npz`` or ``.pt`` file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    loaders = {".npz": _load_npz, ".pt": _load_pt, ".pth": _load_pt}
    if path.suffix not in loaders:
        raise DataError(f"data file {path} must end in .npz, .pt or .pth")
    x, y = loaders[path.suffix](path)
    x = _as_tensor(x, path, "inputs")
    if x.dim() == 0 or x.shape[0] == 0:
        raise DataError(f"{path} holds no samples (inputs of shape {tuple(x.shape)})")
    if not x.is_floating_point():
        x = x.float()
    y = None if y is None else _as_tensor(y, path, "labels")
    if y is not None and (y.dim() == 0 or y.shape[0] != x.shape[0]):
        raise DataError(f"{path}: {x.shape[0]} inputs but labels of shape {tuple(y.shape)}")
    return x, y


def _as_tensor(a: Any, path: Path, what: str) -> torch.Tensor:
    try:
        return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: the {what} are not a numeric array: {exc}") from None


def iter_batches(
    x: torch.Tensor, y: torch.Tensor | None, batch_size: int, max_batches: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    for i, start in enumerate(range(0, x.shape[0], batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        yield x[start : start + batch_size], (None if y is None else y[start : start + batch_size])


def num_batches(n: int, batch_size: int, max_batches: int | None) -> int:
    total = -(-n // batch_size)
    return total if max_batches is None else min(total, max_batches)
