"""ctypes entries to the small native kernels of the ``spectrum`` and ``spatial`` accumulators, compiled
into ``layerscope._C`` from csrc/welch.cpp and csrc/accumulate.cpp:

- :func:`welch_parts_native`: a batch's Welch sums (detrend, window, real FFT, squares added into float64
  state) in one call, where the torch path dispatches seven kernels;
- :func:`fold_reduction_native`: the spectrum's count, extremes, threshold counts and segments from a
  batch's channel reduction, in one call instead of five kernels;
- :func:`cell_energy_native`: Σx² per channel and spatial cell into float64 state, one call instead of four;
- :func:`covariance_native`: the covariance's shifted sums ``[[G, s], [sᵀ, n]]`` of a batch's rows added
  into float64 state (csrc/covariance.cpp), one call instead of a copy, a GEMM and an add;
- :func:`all_finite_native`: ``ChannelStats.all_finite`` from the NaN and Inf counts in one call instead
  of three kernels (the answer is cached on the reduction as ``all_finite`` caches it).

Plain C symbols called through ctypes with the tensors' data pointers and element strides: no pybind11
argument conversion and no NumPy view per call. Each returns False (nothing done) when it cannot run —
the extension not built (or an older build without the symbol), another device or dtype, a layout it
does not take — and the caller then runs its torch code, which is the reference.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

_DTYPES = {torch.float32: 0, torch.float64: 1}
_lib: Any = None
_loaded = False


def _load() -> Any:
    global _lib, _loaded
    _loaded = True
    try:
        from .. import _C
    except ImportError:
        return None
    try:
        lib = ctypes.CDLL(_C.__file__)
        fns = (lib.ls_welch_parts, lib.ls_fold_reduction, lib.ls_cell_energy, lib.ls_cov_update,
               lib.ls_all_zero2)
    except (OSError, AttributeError):
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fns[0].argtypes = [ptr, ctypes.c_int, i64, i64, i64, i64, i64, i64, i64, ptr, ptr]
    fns[0].restype = ctypes.c_int
    fns[1].argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64]
    fns[1].restype = None
    fns[2].argtypes = [ptr, ctypes.c_int, i64, i64, i64, i64, i64, i64, ptr, i64, ptr]
    fns[2].restype = None
    fns[3].argtypes = [ptr, ctypes.c_int, i64, i64, i64, i64, i64, i64, ptr, ptr]
    fns[3].restype = ctypes.c_int
    fns[4].argtypes = [ptr, ptr, i64]
    fns[4].restype = ctypes.c_int
    _lib = lib
    return lib


def available() -> bool:
    """Whether the native kernels are built (the ``layerscope._C`` extension with these symbols)."""
    return (_lib if _loaded else _load()) is not None


def entry(name: str, argtypes: list[Any], restype: Any) -> Any:
    """The extension's C function ``name`` with its ctypes signature set, or None (not built, or an older
    build without it)."""
    lib = _lib if _loaded else _load()
    fn = getattr(lib, name, None) if lib is not None else None
    if fn is not None and fn.argtypes is None:
        fn.argtypes, fn.restype = argtypes, restype
    return fn


def _strided(x: torch.Tensor, channels_last: bool) -> tuple[int, int, int, int, int, int]:
    """``(n, c, p, sn, sc, sp)`` of a ``[N, C, P]`` (or ``[N, P, C]``) tensor."""
    sn, s1, s2 = x.stride()
    n, d1, d2 = x.shape
    return (n, d2, d1, sn, s2, s1) if channels_last else (n, d1, d2, sn, s1, s2)


def welch_parts_native(x: torch.Tensor, length: int, window: torch.Tensor, channels_last: bool,
                       out: torch.Tensor) -> bool:
    """Add the Welch parts of ``x`` (``[N, C, T]``, or ``[N, T, C]`` when ``channels_last``; CPU, float32 or
    float64, all finite) into ``out`` (float64 ``[C, L//2+1, 2]``, contiguous); ``window`` is the Hann
    window in ``x``'s dtype. False (nothing done) when ``length`` is not a power of two in [8, 65536] or
    the kernel cannot run."""
    lib = _lib if _loaded else _load()
    code = _DTYPES.get(x.dtype)
    if lib is None or code is None or x.device.type != "cpu" or not out.is_contiguous():
        return False
    n, c, t, sn, sc, st = _strided(x, channels_last)
    return lib.ls_welch_parts(x.data_ptr(), code, n, c, t, sn, sc, st, length, window.data_ptr(),
                              out.data_ptr()) == 0


def fold_reduction_native(state: tuple[torch.Tensor, ...], part: tuple[torch.Tensor, ...],
                          segments: torch.Tensor | None, n_seg: int) -> bool:
    """``count += ·``, ``min = minimum(min, ·)``, ``max = maximum(max, ·)``, ``above += ·`` for ``state`` and
    ``part`` = (count int64 [C], min float64 [C], max float64 [C], above int64 [T, C]) on the CPU, and
    ``segments += n_seg`` (int64 [C]) unless None. False (nothing done) if a tensor is not a contiguous
    CPU tensor of that dtype and shape."""
    lib = _lib if _loaded else _load()
    if lib is None:
        return False
    tensors = (*state, *part) if segments is None else (*state, *part, segments)
    dtypes = ((torch.int64, torch.float64, torch.float64, torch.int64) * 2 + (torch.int64,))[: len(tensors)]
    for t, dtype in zip(tensors, dtypes, strict=True):
        if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous():
            return False
    count, above = state[0], state[3]
    if part[0].shape != count.shape or part[3].shape != above.shape or (
            segments is not None and segments.shape != count.shape):
        return False
    ptrs = [t.data_ptr() for t in (*state, *part)]
    lib.ls_fold_reduction(count.shape[0], above.shape[0], ptrs[0], ptrs[4], ptrs[1], ptrs[5], ptrs[2], ptrs[6],
                          ptrs[3], ptrs[7], None if segments is None else segments.data_ptr(), n_seg)
    return True


def cell_energy_native(x: torch.Tensor, channels_last: bool, cell: torch.Tensor, out: torch.Tensor) -> bool:
    """``out[c, cell[p]] += Σ_n x[n, c, p]²`` for ``x`` ``[N, C, P]`` (``[N, P, C]`` when ``channels_last``;
    CPU, float32 or float64, all finite), ``cell`` int32 ``[P]`` and ``out`` float64 ``[C, cells]``
    contiguous. False (nothing done) when the kernel cannot run."""
    lib = _lib if _loaded else _load()
    code = _DTYPES.get(x.dtype)
    if lib is None or code is None or x.device.type != "cpu" or not out.is_contiguous():
        return False
    n, c, p, sn, sc, sp = _strided(x, channels_last)
    lib.ls_cell_energy(x.data_ptr(), code, n, c, p, sn, sc, sp, cell.data_ptr(), out.shape[1], out.data_ptr())
    return True


def covariance_plan(x: torch.Tensor, channels_last: bool, ref: torch.Tensor, sums: torch.Tensor) -> tuple | None:
    """The fixed arguments of :func:`covariance_native` for batches shaped, strided and typed like ``x``
    (``[N, C, S]``, or ``[N, S, C]`` when ``channels_last``) with the reference ``ref`` (float64 ``[C]``,
    exactly representable in ``x``'s dtype) and the state ``sums`` (float64 ``[C+1, C+1]``, contiguous);
    None when the kernel cannot run. The plan holds the state's pointers: make a new one when the state
    tensors are replaced."""
    lib = _lib if _loaded else _load()
    code = _DTYPES.get(x.dtype)
    if (lib is None or code is None or x.device.type != "cpu" or ref.dtype != torch.float64
            or sums.dtype != torch.float64 or ref.device.type != "cpu" or sums.device.type != "cpu"
            or not ref.is_contiguous() or not sums.is_contiguous()):
        return None
    n, c, s, sn, sc, ss = _strided(x, channels_last)
    if ref.shape != (c,) or sums.shape != (c + 1, c + 1):
        return None
    return lib.ls_cov_update, (code, n, c, s, sn, sc, ss, ref.data_ptr(), sums.data_ptr())


def covariance_native(x: torch.Tensor, plan: tuple) -> None:
    """Add the shifted sums of the rows of ``x`` (all finite; shaped, strided and typed as when ``plan`` was
    made by :func:`covariance_plan`) into the plan's state."""
    fn, args = plan
    fn(x.data_ptr(), *args)


def all_finite_native(reduced: Any) -> bool:
    """``reduced.all_finite()`` for a :class:`~layerscope.kernels.ChannelStats`, by one native call on
    contiguous int64 CPU counts (and cached on it the way ``all_finite`` caches it); else its own
    method."""
    if reduced._all_finite is not None or getattr(reduced, "arrays", None) is not None:
        return reduced.all_finite()  # cached, or NumPy counts of the native reduction (no tensor made)
    lib = _lib if _loaded else _load()
    nan, inf = reduced.nan, reduced.inf
    if (lib is None or nan.device.type != "cpu" or nan.dtype != torch.int64 or inf.dtype != torch.int64
            or inf.device.type != "cpu" or nan.shape != inf.shape or not nan.is_contiguous()
            or not inf.is_contiguous()):
        return reduced.all_finite()
    reduced._all_finite = bool(lib.ls_all_zero2(nan.data_ptr(), inf.data_ptr(), nan.numel()))
    return reduced._all_finite


def welch_plan(x: torch.Tensor, step: int, length: int, window: torch.Tensor, channels_last: bool,
               out: torch.Tensor) -> tuple | None:
    """The fixed arguments of the Welch call on ``x[::step]`` for batches shaped, strided and typed like
    ``x`` (``[N, C, T]``, or ``[N, T, C]`` when ``channels_last``): call ``fn(x.data_ptr(), *args)`` (the
    view ``x[::step]`` starts where ``x`` does: no view per batch). ``window`` and ``out`` as for
    :func:`welch_parts_native` (the plan holds their pointers). None when the kernel cannot run."""
    lib = _lib if _loaded else _load()
    code = _DTYPES.get(x.dtype)
    length_ok = 8 <= length <= 1 << 16 and length & (length - 1) == 0
    if (lib is None or code is None or x.device.type != "cpu" or not out.is_contiguous() or not length_ok
            or out.dtype != torch.float64 or window.dtype != x.dtype or not window.is_contiguous()):
        return None
    n, c, t, sn, sc, st = _strided(x[::step], channels_last)
    if t < length or out.shape != (c, length // 2 + 1, 2):
        return None
    return lib.ls_welch_parts, (code, n, c, t, sn, sc, st, length, window.data_ptr(), out.data_ptr())


def fold_plan(state: tuple[torch.Tensor, ...], segments: torch.Tensor) -> tuple | None:
    """The fixed arguments of :func:`fold_reduction_native` into ``state`` (count, min, max, above) and
    ``segments``: ``fn(c, t, count, r_count, min, r_min, max, r_max, above, r_above, segments, n_seg)``
    with the state pointers in place (see :func:`fold_native`). None when the kernel cannot run."""
    lib = _lib if _loaded else _load()
    if lib is None:
        return None
    dtypes = (torch.int64, torch.float64, torch.float64, torch.int64, torch.int64)
    for t, dtype in zip((*state, segments), dtypes, strict=True):
        if t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous():
            return None
    count, above = state[0], state[3]
    if segments.shape != count.shape or above.shape[1:] != count.shape:
        return None
    return (lib.ls_fold_reduction, count.shape[0], above.shape[0], tuple(above.shape),
            *(t.data_ptr() for t in (*state, segments)))


def fold_native(plan: tuple, reduced: Any, n_seg: int) -> bool:
    """``fold_reduction_native`` through a :func:`fold_plan`: the reduction's count, min, max and above
    (the dtypes and shapes of :class:`~layerscope.kernels.ChannelStats`; checked here: contiguous and
    ``above`` of the planned shape) into the state, and ``segments += n_seg``. False (nothing done) when
    the reduction does not fit."""
    fn, c, t, above_shape, count, mn, mx, above, segments = plan
    r_count, r_min, r_max, r_above = reduced.count, reduced.min, reduced.max, reduced.above
    if not (r_count.is_contiguous() and r_min.is_contiguous() and r_max.is_contiguous()
            and r_above.is_contiguous() and r_above.shape == above_shape and r_count.shape[0] == c):
        return False
    fn(c, t, count, r_count.data_ptr(), mn, r_min.data_ptr(), mx, r_max.data_ptr(), above, r_above.data_ptr(),
       segments, n_seg)
    return True


def cell_energy_plan(x: torch.Tensor, step: int, channels_last: bool, cell: torch.Tensor,
                     out: torch.Tensor) -> tuple | None:
    """The fixed arguments of :func:`cell_energy_native` on ``x[::step]`` for batches shaped, strided and
    typed like ``x``: call ``fn(x.data_ptr(), *args)``. ``cell`` (int32 ``[P]``, contiguous) and ``out``
    (float64 ``[C, cells]``, contiguous) must outlive the plan (it holds their pointers). None when the
    kernel cannot run."""
    lib = _lib if _loaded else _load()
    code = _DTYPES.get(x.dtype)
    if (lib is None or code is None or x.device.type != "cpu" or out.dtype != torch.float64
            or not out.is_contiguous() or cell.dtype != torch.int32 or not cell.is_contiguous()):
        return None
    n, c, p, sn, sc, sp = _strided(x[::step], channels_last)
    if out.dim() != 2 or out.shape[0] != c or cell.shape != (p,):
        return None
    return lib.ls_cell_energy, (code, n, c, p, sn, sc, sp, cell.data_ptr(), out.shape[1], out.data_ptr())
