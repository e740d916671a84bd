"""Deterministic training of the built-in demos, cached in the user cache directory.

The cache key hashes everything that changes the weights (training settings, data settings, the
model's architecture), so a change in any of them retrains instead of loading stale weights.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write_bytes

log = logging.getLogger(__name__)


def cache_path(name: str, model: nn.Module, *settings: Any) -> Path:
    from platformdirs import user_cache_dir

    what = repr([sorted(s.items()) if isinstance(s, dict) else s for s in settings]) + repr(model)
    key = hashlib.sha256(what.encode()).hexdigest()[:16]
    root = Path(os.environ.get("LAYERSCOPE_CACHE_DIR") or user_cache_dir("layerscope"))
    return root / f"{name}-{key}.pt"


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: dict[str, Any]) -> None:
    """Adam on cross-entropy; ``train`` holds seed, epochs, lr and batch_size. Leaves the model in eval."""
    gen = torch.Generator().manual_seed(train["seed"])
    opt = torch.optim.Adam(model.parameters(), lr=train["lr"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-for-bit the same weights on every machine with this torch
    try:
        model.train()
        for _ in range(train["epochs"]):
            for idx in torch.randperm(len(y), generator=gen).split(train["batch_size"]):
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
        model.eval()


def cached_or_trained(
    model: nn.Module, path: Path, train: Callable[[nn.Module], None], cache: bool = True
) -> nn.Module:
    """Load ``model``'s weights from ``path``, or run ``train(model)`` and store them there atomically."""
    if cache and path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception as exc:  # a corrupt or stale cache is rebuilt, never fatal
            log.warning("ignoring the cached demo weights at %s (%s); retraining", path, exc)
    train(model)
    if cache:
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:
            log.warning("could not cache the demo weights at %s: %s", path, exc)
    return model.eval()
