"""What every channel-reduction backend returns (torch reference, native C++, Triton)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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

    def all_finite(self) -> bool:
        """Whether the batch held no NaN or ±Inf: one device sync, shared by every accumulator that asks."""
        if self._all_finite is None:
            self._all_finite = not bool((self.nan + self.inf).any())
        return self._all_finite
