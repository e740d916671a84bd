"""A per-layer histogram with a fixed number of bins whose range adapts to the data, merged exactly.

``torch.ao.quantization.HistogramObserver`` widens its range by interpolating old counts onto new
bins, which makes the result depend on the order of the batches. Here the grid is *canonical*:

- bins have width ``w = 2**e`` and edges at integer multiples of ``w``; bin ``j`` (absolute index)
  holds ``[j·w, (j+1)·w)``, so a value's bin is ``floor(x / 2**e)`` — exact in float64;
- ``e`` is the smallest exponent ≥ ``floor_exponent(max|x|)`` for which the data's lowest and highest
  bins are fewer than ``B`` apart, and the window starts at the lowest occupied bin
  ``j0 = floor(min(x) / w)``: both are functions of the data set, not of how it was split;
- doubling ``w`` maps bin ``j`` to ``j >> 1`` (``floor(floor(x/w)/2) = floor(x/2w)``), so old counts
  move to the coarser grid by summing aligned pairs (``j >> d`` for d doublings) without loss.

Hence ``update`` over any batching and ``merge`` over any split give the same (e, j0, counts) as one
pass. ``floor_exponent(m)`` is twice float64's spacing at m (``2·ulp(m)``, at least ``2**-1022``):
finer bins could not separate float64 values near m, and it keeps ``|x| / w < 2**52`` so that bin
indices and edges (``(j0 + i)·w``) are exact float64 numbers. Non-finite values are not binned (the
moments accumulator counts them).

Counting goes through ``layerscope.kernels.histogram_pow2`` (native / torch), which bins by
``floor(x · 2**−e)`` directly — exact in float32 too, no edge comparisons. Without it (an older kernel
set), ``kernels.histogram`` with the float64 edges ``lo + i·((hi − lo)/bins)``, exactly ``(j0 + i)·w``
because ``hi − lo = bins·w`` is exact, and where even that window reaches past the float64 range a local
exact path.

One pass per batch: ``update`` first grows the grid to the batch's finite [min, max], which the fused
channel reduction has already computed, so every finite value lies in the window when it is counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from typing_extensions import Self

from .. import kernels
from ..capture.layout import LayoutView
from ..kernels import ChannelStats
from ._protocol import ACCUMULATORS

DEFAULT_BINS = 64
MIN_BINS = 4  # 0 is always an edge (bins align at multiples of w); [−2w, 2w) at w = 2**1023 holds any float64
MIN_EXPONENT = -1022  # 2**e and 2**-e are float64 numbers for every exponent in [−1022, 1023]
MAX_EXPONENT = 1023


def floor_exponent(magnitude: float) -> int:
    """Exponent of twice float64's spacing at ``magnitude`` (the finest bin width used), ≥ MIN_EXPONENT."""
    if magnitude == 0.0:
        return MIN_EXPONENT
    return max(math.frexp(magnitude)[1] - 52, MIN_EXPONENT)  # m < 2**k → ulp(m) ≤ 2**(k−53)


def bin_index(x: float, e: int) -> int:
    """Absolute bin ``floor(x / 2**e)``, exact (a negative value whose quotient underflows is in −1)."""
    j = math.floor(math.ldexp(x, -e))
    return -1 if j == 0 and x < 0 else j


def canonical_exponent(lo: float, hi: float, bins: int, at_least: int = MIN_EXPONENT) -> int:
    """Smallest ``e ≥ max(at_least, floor_exponent(max(|lo|, |hi|)))`` with ``hi``'s bin − ``lo``'s < bins."""
    e = max(at_least, floor_exponent(max(abs(lo), abs(hi))))
    half_span = hi / 2 - lo / 2  # halves: no overflow for spans near the float64 limit
    if half_span > 0:
        # span ≳ 2**k (up to rounding): bins·2**e ≤ span means the end bins are ≥ bins apart, so
        # no e ≤ k − ceil(log2 bins) − 1 fits; bit_length(bins) = ceil(log2(bins + 1)) is one safe start.
        k = math.frexp(half_span)[1]  # half_span ∈ [2**(k−1), 2**k)
        e = max(e, k - bins.bit_length())
    while bin_index(hi, e) - bin_index(lo, e) >= bins:
        e += 1
        if e > MAX_EXPONENT:  # unreachable for finite lo, hi and bins ≥ MIN_BINS
            raise ValueError(f"histogram cannot hold [{lo}, {hi}] in {bins} bins")
    return e


def bin_values(x: torch.Tensor, e: int, j0: int, bins: int, backend: str | None = None) -> torch.Tensor:
    """Counts of the finite values of ``x`` in bins ``j0 … j0+bins−1`` of width ``2**e`` (int64 [bins]).

    Every finite value must lie in the window (the caller coarsens first). Exact power-of-two binning
    in one read (:func:`layerscope.kernels.histogram_pow2`), by ``backend`` when given.
    """
    return kernels.histogram_pow2(x, e, j0, bins, backend=backend)


def _edge(j: int, e: int) -> float:
    """``j · 2**e`` (±inf past the float64 range, where ``math.ldexp`` would raise)."""
    return float(j) * math.ldexp(1.0, e)


def rebin(counts: torch.Tensor, e: int, j0: int, new_e: int, new_j0: int) -> torch.Tensor:
    """Move counts of grid (e, j0) onto the coarser grid (new_e ≥ e, new_j0): bin j → j >> (new_e − e)."""
    bins = counts.shape[0]
    absolute = torch.arange(bins, dtype=torch.int64, device=counts.device) + j0
    # Arithmetic shift floors negatives too; |j| < 2**54, so any shift ≥ 62 gives the same 0 / −1.
    target = (absolute >> min(new_e - e, 62)) - new_j0  # [bins]
    occupied = counts > 0
    target = torch.where(occupied, target, 0)  # empty bins may fall outside the new window
    return torch.zeros_like(counts).scatter_add_(0, target, torch.where(occupied, counts, 0))


@ACCUMULATORS.register("histogram")
class AdaptiveHistogram:
    """Histogram of every finite value of a layer: ``bins`` bins of width ``2**exponent``.

    State: ``counts`` int64 [bins] on the activation's device, ``exponent`` and ``min``/``max`` (the
    extreme finite values seen; the window starts at ``min``'s bin) as Python numbers.
    """

    def __init__(self, bins: int = DEFAULT_BINS, backend: str | None = None, **_: Any) -> None:
        if int(bins) < MIN_BINS:
            raise ValueError(f"histogram bins must be ≥ {MIN_BINS} (0 is always a bin edge), got {bins}")
        self.bins = int(bins)
        # a forced kernel backend counts the values too, when it has that kernel (else the preferred one)
        self.backend = backend if backend and kernels.BACKENDS.get(backend).histogram_pow2 else None
        self.exponent: int | None = None  # None until a finite value has been seen
        self.min = math.inf
        self.max = -math.inf
        self.counts: torch.Tensor | None = None
        self._grid: tuple[Any, ...] = (None, None)  # (exponent, min, bins) → fused_grid() (see there)

    # -- grid ------------------------------------------------------------------------------------
    @property
    def offset(self) -> int:
        """Absolute index ``j0`` of the first bin."""
        return bin_index(self.min, self.exponent)

    @property
    def width(self) -> float:
        return math.ldexp(1.0, self.exponent)

    @property
    def edges(self) -> torch.Tensor:
        """``[bins + 1]`` float64 bin edges ``(j0 + i)·2**e`` (empty before any finite value)."""
        if self.exponent is None:
            return torch.zeros(0, dtype=torch.float64)
        idx = torch.arange(self.bins + 1, dtype=torch.float64) + float(self.offset)
        return idx * self.width  # exact: integers < 2**54 times a power of two

    @property
    def total(self) -> int:
        return 0 if self.counts is None else int(self.counts.sum())

    def _grow(self, lo: float, hi: float, device: torch.device) -> None:
        """Extend the grid to cover [lo, hi] (finite), coarsening the existing counts as needed."""
        new_min, new_max = min(self.min, lo), max(self.max, hi)
        at_least = MIN_EXPONENT if self.exponent is None else self.exponent
        new_e = canonical_exponent(new_min, new_max, self.bins, at_least)
        new_j0 = bin_index(new_min, new_e)
        if self.counts is None:
            self.counts = torch.zeros(self.bins, dtype=torch.int64, device=device)
        elif (new_e, new_j0) != (self.exponent, self.offset):
            self.counts = rebin(self.counts, self.exponent, self.offset, new_e, new_j0)
        self.exponent, self.min, self.max = new_e, new_min, new_max

    # -- streaming -------------------------------------------------------------------------------
    def fused_grid(self) -> tuple[int, int, int] | None:
        """``(exponent, offset, bins)`` of the current grid, for a reduction that counts in its own read
        (None before the first finite value: the first batch sets the grid)."""
        key = (self.exponent, self.min, self.bins)  # the grid is a function of these (asked ~3 times a batch)
        if key != self._grid[0]:
            self._grid = (key, None if self.exponent is None else (self.exponent, self.offset, self.bins))
        return self._grid[1]

    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        # The fused reduction already holds the finite extremes of each channel: one sync, no extra pass.
        lo_hi = self._batch_range(reduced)
        if lo_hi is None:  # no finite value in this batch
            return
        # counted during the reduction's read: NumPy counts of a native reduction (no tensor made), or a tensor
        array = getattr(reduced, "histogram_array", None)
        self.absorb_counted(*lo_hi, reduced.histogram_grid, array if array is not None else reduced.histogram,
                            view.data)

    def absorb_counted(self, lo: float, hi: float, grid: tuple[int, int, int] | None,
                       counts: np.ndarray | torch.Tensor | None, data: torch.Tensor) -> None:
        """Add a batch whose finite values span ``[lo, hi]`` (``lo <= hi``): its counts on ``grid`` (``[bins +
        2]`` or more, as the fused reduction counted them; None: not counted) are used when ``grid`` is
        still the grid after the batch's range is taken in, else the values of ``data`` are counted again."""
        before = self.fused_grid()
        if self.counts is None or not (self.min <= lo and hi <= self.max):
            # else the grid stays: it is a function of (min, max) alone (see the module docstring)
            self._grow(lo, hi, data.device)
            if before != self.fused_grid():
                before = None  # the reduction counted on the old grid (or none): count again
        if before is not None and counts is not None and grid == before:
            # counted during the reduction's read on this very grid, and every value fell inside it
            if isinstance(counts, np.ndarray) and self.counts.is_cpu:
                state = self.counts.numpy()  # a view: the NumPy add updates the state in place
                np.add(state, counts[: self.bins], out=state)
                return
            self.counts += torch.as_tensor(counts[: self.bins]).to(self.counts.device)
            return
        self.counts += bin_values(data, self.exponent, self.offset, self.bins, self.backend).to(self.counts.device)

    @staticmethod
    def _batch_range(reduced: ChannelStats) -> tuple[float, float] | None:
        """The batch's finite ``(min, max)`` from the per-channel extremes, or None without a finite value
        (NumPy on the arrays of a native reduction: a few µs fewer per layer than torch ops)."""
        arrays = getattr(reduced, "arrays", None)  # NumPy arrays of a native reduction
        lows, highs = (arrays[3], arrays[4]) if arrays is not None else (reduced.min, reduced.max)
        if lows.shape[0] == 0:
            return None
        lo, hi = float(lows.min()), float(highs.max())
        return (lo, hi) if lo <= hi else None

    def merge(self, other: Self) -> None:
        if other.bins != self.bins:
            raise ValueError(f"cannot merge a histogram of {other.bins} bins into one of {self.bins}")
        if other.counts is None:
            return
        self._grow(other.min, other.max, other.counts.device)
        moved = rebin(other.counts.to(self.counts.device), other.exponent, other.offset,
                      self.exponent, self.offset)
        self.counts += moved

    # -- estimates -------------------------------------------------------------------------------
    def quantile(self, q: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Quantiles from the histogram, linear within a bin, clamped to the observed [min, max].

        For ``t = q·total`` the estimate lies in the bin holding the ``ceil(t)``-th smallest value
        (numpy's ``method="inverted_cdf"``), so it is within one bin width of that order statistic.
        NaN when the histogram is empty.
        """
        qs = torch.as_tensor(q, dtype=torch.float64).reshape(-1)
        if ((qs < 0) | (qs > 1)).any():
            raise ValueError(f"quantile levels must be in [0, 1], got {qs.tolist()}")
        if self.total == 0:
            return torch.full_like(qs, torch.nan).reshape(torch.as_tensor(q).shape)
        counts = self.counts.cpu()
        cum = counts.cumsum(0).to(torch.float64)  # [bins]
        target = qs * self.total
        i = torch.searchsorted(cum, target, side="left").clamp(max=self.bins - 1)
        before = torch.where(i > 0, cum[(i - 1).clamp(min=0)], 0.0)
        frac = (target - before) / counts[i].to(torch.float64).clamp(min=1)
        est = self.edges[i] + frac * self.width
        return est.clamp(self.min, self.max).reshape(torch.as_tensor(q).shape)

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"bins": self.bins}
        if self.counts is not None:
            state.update(exponent=self.exponent, min=self.min, max=self.max)
            state["counts"] = self.counts.detach().to("cpu", copy=True)  # a snapshot: the state changes in place
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        acc = cls(bins=state["bins"])
        if "counts" in state:
            acc.exponent = int(state["exponent"])
            acc.min, acc.max = float(state["min"]), float(state["max"])
            acc.counts = torch.as_tensor(state["counts"]).to(torch.int64, copy=True)  # updated in place later
        return acc
