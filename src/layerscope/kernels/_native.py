"""Native C++ backend (``layerscope._C``): CPU tensors of float32, float64, float16 and bfloat16.

Registered in every case; when the extension was not built its ``available`` says why and one warning
tells the user that the torch path is used. Tensors reach the extension zero-copy through NumPy views
(bfloat16, which NumPy lacks, as the int16 view of its storage plus a dtype tag), with their strides.
The thread count is ``torch.get_num_threads()`` at each call.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..capture.layout import LayoutView
from . import BACKENDS, Backend, StateKernels
from ._contract import ChannelStats
from ._histogram import dense_flat
from ._scan import ScanKernels

try:
    from .. import _C
except ImportError as exc:  # no compiler at install time, or a broken build
    _C = None
    _MISSING = f"layerscope._C not built: {exc}"
else:
    _MISSING = ""

_TAGS = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}
_warned = False


def build_info() -> dict[str, Any] | None:
    """How ``layerscope._C`` was compiled (``openmp``, ``simd``, ``compiler`` …), or None if not built."""
    return dict(_C.build_info()) if _C is not None else None


def native_error() -> str:
    """Why ``layerscope._C`` is not usable ('' when it is)."""
    return _MISSING


def _warn_missing() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"{_MISSING}. layerscope uses its torch kernels on CPU (several passes per statistic). "
            "Install a C++17 compiler and reinstall layerscope to build the native kernels.",
            RuntimeWarning,
            stacklevel=3,
        )


def available(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    if _C is None:
        if device.type == "cpu":
            _warn_missing()
        return False, _MISSING
    if device.type != "cpu":
        return False, f"tensor on {device.type}"
    if dtype not in _TAGS:
        return False, f"dtype {dtype} not supported (float32, float64, float16, bfloat16)"
    omp = "OpenMP" if _C.build_info()["openmp"] else "no OpenMP: one thread"
    return True, f"layerscope._C, C++ ({omp})"


def as_array(t: torch.Tensor) -> np.ndarray:
    """Zero-copy NumPy view of a CPU tensor, strides kept (bfloat16 → its int16 bits)."""
    t = t.detach().resolve_conj().resolve_neg()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


_thresholds: dict[tuple[float, ...], np.ndarray] = {}  # thresholds → their float64 array, made once


def _threshold_array(thresholds: Sequence[float]) -> np.ndarray:
    key = tuple(thresholds)
    arr = _thresholds.get(key)
    if arr is None:
        arr = np.asarray(key, dtype=np.float64).reshape(-1)
        arr.flags.writeable = False
        if len(_thresholds) < 1024:
            _thresholds[key] = arr
    return arr


def channel_reduce_native(
    view: LayoutView, thresholds: Sequence[float], histogram_grid: tuple[int, int, int] | None = None
) -> ChannelStats:
    x = view.data
    dtype = x.dtype
    # activations come detached from hooks: their plain NumPy view is enough (no copy, no conj/neg bits)
    arr = x.numpy() if dtype != torch.bfloat16 and not x.requires_grad else as_array(x)
    if view.channels_last:  # [N, S, C] → [N, C, S], a strided view; the kernel reads either order
        arr = arr.swapaxes(1, 2)  # (NumPy's view: a third of the time of torch's transpose)
    # ten NumPy views of one buffer in ChannelStats field order, then the fused histogram's counts (or None)
    *fields, counts = _C.channel_reduce(
        arr, _TAGS[dtype], _threshold_array(thresholds), torch.get_num_threads(), histogram_grid
    )
    return ChannelStats.from_arrays(fields, counts, histogram_grid if counts is not None else None)


def histogram_native(x: torch.Tensor, bins: int, lo: float, hi: float) -> torch.Tensor:
    flat = dense_flat(x)
    return torch.from_numpy(
        _C.histogram(as_array(flat), _TAGS[x.dtype], bins, lo, hi, torch.get_num_threads())
    )


def histogram_pow2_native(x: torch.Tensor, exponent: int, offset: int, bins: int) -> torch.Tensor:
    flat = dense_flat(x)
    counts = _C.histogram_pow2(as_array(flat), _TAGS[x.dtype], exponent, offset, bins, torch.get_num_threads())
    return torch.from_numpy(counts[:bins])  # [bins + 2]: then the finite values below / above the window


def _h0_array(h0: torch.Tensor | None) -> np.ndarray | None:
    return None if h0 is None else as_array(h0.contiguous())


def scan_forward_native(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    h = _C.scan_forward(as_array(a), as_array(b), _h0_array(h0), _TAGS[a.dtype], torch.get_num_threads())
    return torch.from_numpy(h)


def scan_backward_native(
    a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, grad_h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    grads = _C.scan_backward(
        as_array(a),
        as_array(h),
        _h0_array(h0),
        as_array(grad_h.to(a.dtype).contiguous()),
        _TAGS[a.dtype],
        torch.get_num_threads(),
    )
    return tuple(None if g is None else torch.from_numpy(g) for g in grads)  # type: ignore[return-value]


def coverage_update_native(
    values: torch.Tensor | np.ndarray,
    taus: np.ndarray,
    top_k: int,
    state: Sequence[np.ndarray],
    ranges: Sequence[np.ndarray] | None,
) -> None:
    """Fold neuron values ``[N, C]`` into CPU coverage state in place (see ``stats.coverage``).

    ``state``: NumPy views of ``nc_hits`` bool [T, C], ``topk_hits`` bool [C], ``low``/``high`` float64
    [C], ``skipped`` int64 [C]; ``ranges``: ``range_low``/``range_high`` float64 [C], ``kmnc_hits`` bool
    [C, k], ``lower_hits``/``upper_hits`` bool [C]. All C-contiguous; the kernel checks shapes and dtypes.
    """
    if isinstance(values, torch.Tensor):
        if values.dtype not in (torch.float32, torch.float64):
            values = values.to(torch.float64)  # exact for every narrower float
        values = values.detach().numpy()
    _C.coverage_update(
        values, taus, top_k, *state, None if ranges is None else tuple(ranges), torch.get_num_threads()
    )


def moments_merge_native(state: Sequence[np.ndarray], part: Sequence[np.ndarray]) -> None:
    """Fold a ChannelStats partial into CPU moments state in place (Chan et al. 1979; see ``stats.moments``).

    Both NumPy arrays (views of CPU tensors) in the order count, mean, m2, min, max, zeros, above [T, C],
    nan, inf (int64 / float64 [C]); the kernel checks shapes, dtypes and that ``state`` is writable.
    """
    _C.moments_merge(tuple(state), tuple(part))


BACKENDS.register("native")(
    Backend(
        "native",
        available,
        channel_reduce_native,
        priority=10,
        histogram=histogram_native,
        scan=ScanKernels(scan_forward_native, scan_backward_native),
        histogram_pow2=histogram_pow2_native,
        state=StateKernels(coverage_update_native, moments_merge_native),
        fused_histogram=True,
    )
)
