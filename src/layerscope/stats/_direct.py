"""One native call per layer and batch for the probe's default statistics (``moments``, ``coverage``,
``histogram``): the layer's channel reduction and the in-place updates of their CPU state.

Through the general path a batch of a layer is reduced (``kernels.channel_reduce``, which hands back
NumPy arrays wrapped in a :class:`~layerscope.kernels.ChannelStats`), then each accumulator's ``update``
folds the result into its state with a native call of its own. Inside a forward pass every step of that
starts with cold caches right after the layer's kernel; measured on the probe benchmark's ResNet-18
(batch 64, 2 threads) the Python around the reduction cost about 8 ms of a 200 ms batch.

:class:`DirectUpdate` is planned by the probe after a batch of a layer whose accumulators are all of
those three kinds, with native CPU state: it fixes the batch's geometry (shape, strides, dtype and the
layout's ``[N, C, S]`` view) and the state's pointers in one int64 array, and a batch that matches takes
a single call (``ls_direct_update``, csrc/direct.cpp) that runs the same kernels on the same arguments
as the general path. The state is therefore the same, bit for bit. Per batch it checks what the general
path would otherwise decide: the batch's shape, strides, dtype and device, that each accumulator still
holds the state tensors the plan points at (a merge, a restored state or the histogram's regrid replaces
them) and that the histogram's grid is unchanged. When the batch's finite values reach past the range
the histogram has seen, the call leaves the histogram to :meth:`AdaptiveHistogram.absorb_counted`, which
grows the grid in Python as its own ``update`` does.
"""

from __future__ import annotations

import ctypes
import operator
import struct
from typing import Any

import numpy as np
import torch

from ..kernels import _native_accumulate as _native
from ..kernels import select_backend
from .coverage import NeuronCoverage
from .histogram import AdaptiveHistogram
from .moments import ChannelMoments

# Offsets into the plan array: the Word enum of csrc/direct.cpp.
_N, _C, _S, _SN, _SC, _SS, _NUM_THR, _THR, _PARTS = range(1, 10)
_MOMENTS = 10
_TAUS, _NUM_TAUS, _TOP_K, _COVERAGE = 19, 20, 21, 22
_RANGES = 27  # then range_low, range_high, sections, kmnc_hits, lower_hits, upper_hits
_E, _J0, _BINS, _COUNTS, _LO, _HI, _OUT = 34, 35, 36, 37, 38, 39, 40
_WORDS = 41
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _bits(x: float) -> int:
    """The float64's bits as a signed int64 (the plan stores the histogram's range that way)."""
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _lib_fn() -> Any:
    words = _native.entry("ls_direct_plan_words", [], ctypes.c_int64)
    if words is None or words() != _WORDS:  # not built, or a build whose plan layout is not this module's
        return None
    return _native.entry("ls_direct_update", [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p], ctypes.c_int)


class DirectUpdate:
    """The reduction and the default accumulators' updates of one layer in one native call, for batches
    shaped, strided and typed like the one it was planned on; build it with :func:`plan_direct`."""

    __slots__ = ("accumulators", "address", "coverage", "dtype", "fn", "held", "hist_key", "histogram", "joined",
                 "moments", "out", "plan", "samples", "shape", "strides", "thresholds")

    def __init__(self, fn: Any, plan: Any, out: np.ndarray | None, tensor: torch.Tensor, thresholds: np.ndarray,
                 accumulators: dict[str, Any], moments: Any, coverage: Any, histogram: Any) -> None:
        self.fn, self.plan, self.out, self.thresholds = fn, plan, out, thresholds  # kept alive: the plan points at them
        self.address = ctypes.addressof(plan)
        self.shape, self.strides, self.dtype = tensor.shape, tensor.stride(), tensor.dtype
        self.samples = plan[_N]  # the view's N: an unbatched [C] output is one sample
        self.moments, self.coverage, self.histogram = moments, coverage, histogram
        # the layer's accumulators (its dict, and the objects it held): one replaced by another declines
        self.accumulators, self.joined = accumulators, tuple(accumulators.values())
        self.held = _held(moments, coverage, histogram)  # the tensors themselves: their memory stays valid
        self.hist_key = _hist_key(histogram)

    def run(self, tensor: torch.Tensor) -> bool:
        """Reduce ``tensor`` and update the layer's accumulators; False (nothing done) when the batch, the
        layer's accumulators or their state do not fit the plan (the caller then takes the general path)."""
        if (tensor.shape != self.shape or tensor.dtype is not self.dtype or not tensor.is_cpu
                or tensor.stride() != self.strides or _hist_key(self.histogram) != self.hist_key):
            return False
        accs, joined = self.accumulators, self.joined
        if len(accs) != len(joined) or not all(map(operator.is_, accs.values(), joined)):
            return False
        held = _held(self.moments, self.coverage, self.histogram)
        if len(held) != len(self.held) or not all(map(operator.is_, held, self.held)):
            return False
        status = self.fn(tensor.data_ptr(), torch.get_num_threads(), self.address)
        if status < 0:
            if status == -1:  # the reduction failed before anything was written: the general path reports why
                return False
            raise RuntimeError(
                "layerscope: the native coverage update failed after the layer's reduction (out of memory?); "
                "this layer's coverage state may hold part of the batch"
            )
        if self.coverage is not None:
            self.coverage.samples += self.samples
        if status == 1:  # values past the histogram's range: it grows its grid, as its own update does
            out = self.out
            grid = (self.plan[_E], self.plan[_J0], self.plan[_BINS])
            self.histogram.absorb_counted(float(out[0]), float(out[1]), grid, out[2:].view(np.int64), tensor)
            self._replan_histogram()
        return True

    def _replan_histogram(self) -> None:
        """Point the plan at the histogram's grid and counts after it grew (a later batch checks them)."""
        hist, plan = self.histogram, self.plan
        plan[_E], plan[_J0], plan[_BINS] = hist.fused_grid()
        plan[_COUNTS], plan[_LO], plan[_HI] = hist.counts.data_ptr(), _bits(hist.min), _bits(hist.max)
        self.held = _held(self.moments, self.coverage, hist)
        self.hist_key = _hist_key(hist)


def _held(moments: Any, coverage: Any, histogram: Any) -> tuple[Any, ...]:
    """The state tensors the plan points at (a replaced tensor is a different object)."""
    held: tuple[Any, ...] = ()
    if moments is not None:
        held += moments._fields(moments)
    if coverage is not None:
        held += (coverage.nc_hits, coverage.topk_hits, coverage.low, coverage.high, coverage.skipped)
        if coverage.ranges is not None:
            held += (*coverage.ranges, coverage.kmnc_hits, coverage.lower_hits, coverage.upper_hits)
    if histogram is not None:
        held += (histogram.counts,)
    return held


def _hist_key(histogram: Any) -> tuple[Any, ...] | None:
    return None if histogram is None else (histogram.exponent, histogram.min, histogram.max)


def plan_direct(accumulators: dict[str, Any], tensor: torch.Tensor, view: Any, thresholds: tuple[float, ...],
                backend: str | None) -> DirectUpdate | None:
    """The direct update of a layer whose accumulators are ``accumulators`` (all of them moments, coverage
    or histogram, with native CPU state that has seen a batch) for batches like ``tensor`` (whose view in
    the layer's layout is ``view``); None when it cannot be made."""
    kinds = {ChannelMoments: "moments", NeuronCoverage: "coverage", AdaptiveHistogram: "histogram"}
    found: dict[str, Any] = {}
    for acc in accumulators.values():
        kind = kinds.get(type(acc))
        if kind is None or kind in found:
            return None
        found[kind] = acc
    mo, co, hi = found.get("moments"), found.get("coverage"), found.get("histogram")
    code = _DTYPE_CODES.get(tensor.dtype)
    if not found or code is None or not tensor.is_cpu:
        return None
    chosen, _ = select_backend(tensor.device, tensor.dtype, backend)
    if chosen.name != "native":
        return None
    fn = _lib_fn()
    if fn is None:
        return None
    x = view.ncs()
    if x.data_ptr() != tensor.data_ptr() or x.dim() != 3:
        return None
    n, c, s = x.shape
    words = [0] * _WORDS
    words[0] = code
    words[_N:_SS + 1] = [n, c, s, *x.stride()]
    thr = np.ascontiguousarray(thresholds, dtype=np.float64).reshape(-1)
    words[_NUM_THR], words[_THR] = thr.shape[0], thr.ctypes.data
    parts = 0
    if mo is not None:
        if (mo.count is None or mo._native_merge is None or mo.count.shape != (c,)
                or mo.above.shape != (thr.shape[0], c)):
            return None
        state = mo._fields(mo)
        if not all(t.is_cpu and t.is_contiguous() for t in state):
            return None
        words[_MOMENTS:_MOMENTS + 9] = [t.data_ptr() for t in state]
        parts |= 1
    if co is not None:
        native, state, ranges = co._native_update() if co.nc_hits is not None else (None, None, None)
        if native is None or co.num_neurons != c:
            return None
        words[_TAUS], words[_NUM_TAUS], words[_TOP_K] = co._taus.ctypes.data, co._taus.shape[0], co.top_k
        words[_COVERAGE:_COVERAGE + 5] = [a.ctypes.data for a in state]
        if ranges is not None:
            low, high, kmnc, lower, upper = ranges
            words[_RANGES:_RANGES + 7] = [1, low.ctypes.data, high.ctypes.data, co.kmnc_sections, kmnc.ctypes.data,
                                          lower.ctypes.data, upper.ctypes.data]
        parts |= 2
    out = None
    if hi is not None:
        grid = hi.fused_grid()
        if grid is None or not hi.counts.is_cpu or not hi.counts.is_contiguous() or hi.counts.dtype != torch.int64:
            return None
        e, j0, bins = grid
        out = np.zeros(bins + 4, dtype=np.float64)  # [lo, hi], then bins + 2 int64 counts in the same bytes
        words[_E:_OUT + 1] = [e, j0, bins, hi.counts.data_ptr(), _bits(hi.min), _bits(hi.max), out.ctypes.data]
        parts |= 4
    words[_PARTS] = parts
    plan = (ctypes.c_int64 * _WORDS)(*words)
    return DirectUpdate(fn, plan, out, tensor, thr, accumulators, mo, co, hi)
