"""What every channel-reduction backend returns (torch reference, native C++, Triton)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# the per-channel tensor fields, in order (the native kernel returns its NumPy views in this order)
TENSOR_FIELDS = ("count", "mean", "m2", "min", "max", "zeros", "above", "nan", "inf", "sample_mean")


@dataclass
class ChannelStats:
    """One batch of one layer, reduced per channel in a single read of the activation.

    Moments, extremes and threshold counts are over the *finite* values of each channel; NaN and ±Inf
    are counted separately. Tensors live on the activation's device.

    count   int64   [C]     finite values seen
    mean    float64 [C]     mean of the finite values (0 where count == 0)
    m2      float64 [C]     Σ (x − mean)² over the finite values
    min     float64 [C]     +inf where count == 0
    max     float64 [C]     −inf where count == 0
    zeros   int64   [C]     values exactly 0
    above   int64   [T, C]  finite values > thresholds[t]
    nan     int64   [C]
    inf     int64   [C]     +Inf and −Inf
    sample_mean float64 [N, C]  per-sample channel mean over the finite positions (NaN where none):
                            the "neuron" value of the coverage criteria.
    histogram   int64 [bins + 2] or None   when the caller asked for a power-of-two grid
                            ``histogram_grid = (exponent, offset, bins)`` and the backend counts in the
                            same read: :func:`layerscope.kernels.histogram_pow2`'s counts of every finite
                            value, then the finite values below and above the window. None otherwise.

    A CPU backend may build it from NumPy arrays instead (:meth:`from_arrays`): the tensors are then
    made on first access (zero-copy ``torch.from_numpy``), and CPU accumulators with native state
    kernels take :attr:`arrays` (and :attr:`histogram_array`, the NumPy array ``histogram`` wraps)
    directly — per layer and batch, ten tensor wrappers and their torch ops fewer.
    """

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor
    zeros: torch.Tensor
    above: torch.Tensor
    nan: torch.Tensor
    inf: torch.Tensor
    sample_mean: torch.Tensor
    histogram: torch.Tensor | None = None
    histogram_grid: tuple[int, int, int] | None = None
    _all_finite: bool | None = field(default=None, init=False, repr=False, compare=False)

    arrays: tuple[np.ndarray, ...] | None = field(default=None, init=False, repr=False, compare=False)
    histogram_array: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_arrays(
        cls,
        arrays: Sequence[np.ndarray],
        histogram: np.ndarray | None = None,
        histogram_grid: tuple[int, int, int] | None = None,
    ) -> ChannelStats:
        """Statistics held as NumPy arrays (``TENSOR_FIELDS`` order); tensors are views made on demand."""
        if len(arrays) != len(TENSOR_FIELDS):
            raise ValueError(f"ChannelStats.from_arrays: expected {len(TENSOR_FIELDS)} arrays, got {len(arrays)}")
        obj = cls.__new__(cls)
        obj.histogram = None if histogram is None else torch.from_numpy(histogram)
        obj.histogram_grid = histogram_grid
        obj._all_finite = None
        obj.arrays = tuple(arrays)
        obj.histogram_array = histogram
        return obj

    def __getattr__(self, name: str) -> Any:
        # only reached for a field not yet set: the lazily wrapped arrays of from_arrays
        arrays = self.__dict__.get("arrays")
        if arrays is not None and name in TENSOR_FIELDS:
            tensor = torch.from_numpy(arrays[TENSOR_FIELDS.index(name)])
            setattr(self, name, tensor)
            return tensor
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def all_finite(self) -> bool:
        """Whether the batch held no NaN or ±Inf: one device sync, shared by every accumulator that asks."""
        if self._all_finite is None:
            if self.arrays is not None:
                self._all_finite = not (np.count_nonzero(self.arrays[7]) or np.count_nonzero(self.arrays[8]))
            else:
                self._all_finite = not bool((self.nan + self.inf).any())
        return self._all_finite

