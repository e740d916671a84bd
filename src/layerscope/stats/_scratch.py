"""Scratch tensors for the per-batch work of an accumulator, reused across batches.

A fresh allocation per batch costs an allocator call and, for large tensors, page faults that can
dwarf the arithmetic. A small scratch tensor (≤ ``SMALL`` elements) is owned by the accumulator and
kept; a large one comes from the kernels' per-thread workspace, shared by every layer, so that no
layer holds an activation-sized buffer. Either is valid only until the accumulator's next update.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..kernels._torch import workspace

SMALL = 1 << 18  # elements (1 MiB of float32): the most an accumulator keeps for itself


class Scratch:
    """One reusable contiguous tensor; ``get`` returns it shaped ``shape`` (no zeroing)."""

    def __init__(self) -> None:
        self._flat: torch.Tensor | None = None
        self._key: tuple[Any, ...] = ()
        self._view: torch.Tensor | None = None

    def get(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (shape, dtype, device)
        if key == self._key:  # the usual case: the same shape as the last batch
            return self._view
        numel = math.prod(shape)
        if numel > SMALL:
            return workspace(torch.empty((), dtype=dtype, device=device).expand(shape))
        flat = self._flat
        if flat is None or flat.dtype != dtype or flat.device != device or flat.numel() < numel:
            # a normal tensor even under inference_mode: it is written in place outside it too
            with torch.inference_mode(False):
                flat = self._flat = torch.empty(numel, dtype=dtype, device=device)
        self._key, self._view = key, flat[:numel].view(shape)
        return self._view
