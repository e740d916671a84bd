"""ctypes entry to ``ls_welch_parts`` (csrc/welch.cpp), compiled into ``layerscope._C``: one call per batch
for the Welch sums of the ``spectrum`` accumulator (detrend, window, real FFT, squares added into float64
state), where the torch path dispatches seven kernels.

A plain C symbol called through ctypes with the tensors' data pointers and element strides: no
pybind11 argument conversion and no NumPy view per call. None when the extension was not built (or is
an older build without the symbol); the caller then runs the torch code, which is the reference.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch

_DTYPES = {torch.float32: 0, torch.float64: 1}
_fn: Callable[..., int] | None = None
_loaded = False


def _load() -> Callable[..., int] | None:
    global _fn, _loaded
    _loaded = True
    try:
        from .. import _C
    except ImportError:
        return None
    try:
        f = ctypes.CDLL(_C.__file__).ls_welch_parts
    except (OSError, AttributeError):
        return None
    i64 = ctypes.c_int64
    f.argtypes = [ctypes.c_void_p, ctypes.c_int, i64, i64, i64, i64, i64, i64, i64, ctypes.c_void_p, ctypes.c_void_p]
    f.restype = ctypes.c_int
    _fn = f
    return f


def welch_parts_native(x: torch.Tensor, length: int, window: torch.Tensor, channels_last: bool,
                       out: torch.Tensor) -> bool:
    """Add the Welch parts of ``x`` (``[N, C, T]``, or ``[N, T, C]`` when ``channels_last``; CPU, float32 or
    float64, all finite) into ``out`` (float64 ``[C, L//2+1, 2]``, contiguous); ``window`` is the Hann
    window in ``x``'s dtype. False (nothing done) when the native kernel cannot: not built, another
    device or dtype, or ``length`` not a power of two in [8, 65536]."""
    fn = _fn if _loaded else _load()
    code = _DTYPES.get(x.dtype)
    if fn is None or code is None or x.device.type != "cpu" or not out.is_contiguous():
        return False
    sn, s1, s2 = x.stride()
    n, d1, d2 = x.shape
    c, t, sc, st = (d2, d1, s2, s1) if channels_last else (d1, d2, s1, s2)
    return fn(x.data_ptr(), code, n, c, t, sn, sc, st, length, window.data_ptr(), out.data_ptr()) == 0
