"""One native call per layer and batch for the ``spectrum``, ``spatial`` and ``covariance`` accumulators.

Each of these accumulators has a steady-state path of its own (see their modules): after the first
batch of a shape it keeps a plan, the fixed ctypes arguments of its native calls, and a batch of that
shape costs one Python ``update`` and one or three ctypes calls (the finiteness test, the spectrum's
fold and its Welch sums, the cell energies, the covariance sums). Inside a forward pass each of those
starts with cold caches right after the layer's own kernel, and on a small model they add up to a
large part of the statistics' cost.

:class:`JointUpdate` takes the plans of two or three of them on one layer, once per batch shape (the
probe builds it after a batch in which they planned), and runs their native work in a single call
(``ls_layer_update``, csrc/joint.cpp) with one array holding every fixed argument. Per batch it checks
what each accumulator's own fast path checks — the batch's shape, strides, dtype and layout, that the
accumulator still holds the same plan and that the plan's state tensors are still the accumulator's (a
merge or a restored state replaces them), that the reduction has the expected layout — then makes the
call, which does nothing unless the batch is all finite; afterwards it adds the samples and rows used
to the accumulators' counters. Whenever it declines (returns False) nothing has been changed and the
probe runs each accumulator's own ``update``: the result is the same either way, bit for bit, since the
call runs the same kernels on the same arguments. The stream spectrum (``stream_spectrum=True``) is not
joined: it needs a torch op per batch.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from ..kernels import _native_accumulate as _native
from ._planned import batch_key
from .covariance import ChannelCovariance
from .spatial import SpatialDensity
from .spectrum import ChannelSpectrum

_WORDS = 36  # the plan array's length: see csrc/joint.cpp
_WELCH, _FOLD, _CELLS, _COV = 1, 2, 4, 8


def _lib_fn() -> Any:
    return _native.entry("ls_layer_update", [ctypes.c_void_p] * 8, ctypes.c_int)


class JointUpdate:
    """The joint native update of a layer's spectrum, spatial and covariance accumulators (any two or
    three of them) for batches of one shape; build it with :func:`plan_joint`."""

    __slots__ = ("above_shape", "address", "channels", "covariance", "fasts", "fn", "key", "plan", "rows",
                 "samples", "spatial", "spectrum")

    def __init__(self, key: tuple, fn: Any, plan: Any, spectrum: Any, spatial: Any, covariance: Any,
                 channels: int, above_shape: tuple, samples: int, rows: int) -> None:
        self.key, self.fn, self.plan = key, fn, plan  # the plan array, kept alive for its address
        self.address = ctypes.addressof(plan)
        self.spectrum, self.spatial, self.covariance = spectrum, spatial, covariance
        self.fasts = tuple(None if a is None else a._fast for a in (spectrum, spatial, covariance))
        self.channels, self.above_shape, self.samples, self.rows = channels, above_shape, samples, rows

    def run(self, view: Any, reduced: Any) -> bool:
        """Update the joined accumulators with this batch; False (nothing done) when it does not fit the
        plan or is not all finite (the caller then runs their own updates)."""
        data = view.data
        if self.key != batch_key(view) or not data.is_cpu:
            return False
        sp, sa, cv = self.spectrum, self.spatial, self.covariance
        for acc, fast in zip((sp, sa, cv), self.fasts, strict=True):  # the plans joined, state unreplaced
            if acc is not None and not (acc._fast is fast and acc._holds(fast)):
                return False
        nan, inf, count, mn, mx, above = (reduced.nan, reduced.inf, reduced.count, reduced.min, reduced.max,
                                          reduced.above)
        c = self.channels
        if not (nan.shape[0] == c and inf.shape[0] == c and count.shape[0] == c
                and (self.above_shape is None or above.shape == self.above_shape)
                and nan.is_contiguous() and inf.is_contiguous() and count.is_contiguous() and mn.is_contiguous()
                and mx.is_contiguous() and above.is_contiguous() and nan.dtype == torch.int64
                and inf.dtype == torch.int64 and nan.is_cpu and inf.is_cpu):
            return False
        if self.fn(data.data_ptr(), nan.data_ptr(), inf.data_ptr(), count.data_ptr(), mn.data_ptr(), mx.data_ptr(),
                   above.data_ptr(), self.address) != 0:
            return False
        reduced._all_finite = True  # what all_finite() would cache (the call checked the counts)
        if sa is not None:
            sa.samples += self.samples
        if cv is not None:
            cv.count += self.rows
        return True


def plan_joint(accumulators: dict[str, Any], view: Any) -> JointUpdate | None:
    """The joint update of ``accumulators``' spectrum, spatial and covariance for batches like
    ``view.data``, from the plans they made on that batch; None unless at least two of them hold a native
    plan for it (and the extension has the joint entry)."""
    data = view.data
    key = batch_key(view)
    sp, sa, cv = (accumulators.get(k) for k in ("spectrum", "spatial", "covariance"))
    sp = sp if type(sp) is ChannelSpectrum and not sp.stream and sp._fast is not None and sp._fast[0] == key \
        else None
    sa = sa if type(sa) is SpatialDensity and sa._fast is not None and sa._fast[0] == key else None
    cv = cv if type(cv) is ChannelCovariance and cv._fast is not None and cv._fast[0] == key else None
    if (sp is not None) + (sa is not None) + (cv is not None) < 2 or data.dtype not in _native._DTYPES:
        return None
    fn = _lib_fn()
    if fn is None:
        return None
    code = _native._DTYPES[data.dtype]
    words = [0] * _WORDS
    words[0], words[1] = code, view.num_channels
    parts, channels, above_shape = 0, view.num_channels, None  # above_shape None: not read (no spectrum)
    if sp is not None:
        _, _, welch_fn, welch_args, fold, n_seg = sp._fast
        _, c, t, above_shape, count, mn, mx, above, segments = fold
        if c != channels:
            return None
        words[2] = t
        words[13:19] = [count, mn, mx, above, segments, n_seg]
        parts |= _FOLD
        if welch_fn is not None:
            if welch_args[0] != code:
                return None
            words[4:13] = list(welch_args[1:])
            parts |= _WELCH
    if sa is not None:
        args = sa._fast[3]
        if args[0] != code:
            return None
        words[19:28] = list(args[1:])
        parts |= _CELLS
    if cv is not None:
        args = cv._fast[4]
        if args[0] != code:
            return None
        words[28:36] = list(args[1:])
        parts |= _COV
    words[3] = parts
    plan = (ctypes.c_int64 * _WORDS)(*[int(w or 0) for w in words])
    joint = JointUpdate(key, fn, plan, sp, sa, cv, channels, above_shape,
                        sa._fast[4] if sa is not None else 0, cv._fast[5] if cv is not None else 0)
    return joint
