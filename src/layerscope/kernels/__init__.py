"""Kernel dispatch: one place that picks a backend for each activation and can say why.

Backends register themselves in :data:`BACKENDS` with a function ``available(device, dtype) -> (bool,
why)`` and the kernels they implement (``channel_reduce``; optionally ``histogram`` and ``scan``).
Order of preference: native (C++, CPU; priority 10) → triton (CUDA; 20) → torch (any device; 100).
A backend that lacks a kernel is skipped for that kernel.

Besides the kernels on activations, a backend may offer :class:`StateKernels`: in-place updates of small
accumulator state (coverage hit sets, the moments merge). :func:`state_kernels` returns them for state on
a device, or None, and the accumulators then run their own torch code (the reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._errors import ConfigError
from .._registry import Registry
from ..capture.layout import LayoutView
from ._contract import ChannelStats
from ._histogram import check_histogram_args, check_pow2_args, histogram_pow2_torch, histogram_torch
from ._scan import ScanKernels, scan_backward_torch, scan_forward_torch
from ._torch import channel_reduce_torch

__all__ = [
    "BACKENDS",
    "KERNELS",
    "Backend",
    "ChannelStats",
    "ScanKernels",
    "StateKernels",
    "backend_info",
    "channel_reduce",
    "channel_reducer",
    "histogram",
    "histogram_pow2",
    "kernel_environment",
    "select_backend",
    "state_kernels",
]

KERNELS = ("channel_reduce", "histogram", "histogram_pow2", "scan")


@dataclass(frozen=True)
class StateKernels:
    """In-place updates of accumulator state; results equal the accumulators' torch code bit for bit."""

    # (values [N, C] tensor or ndarray, taus float64 ndarray [T], top_k, NumPy views of (nc_hits,
    #  topk_hits, low, high, skipped) and of (range_low, range_high, kmnc_hits, lower_hits, upper_hits)
    #  or None) → None, the views updated in place; see stats.coverage
    coverage_update: Callable[..., None]
    # (state, part): NumPy arrays of the ChannelStats fields without sample_mean (the state: views of
    # the CPU state tensors, updated in place); see stats.moments
    moments_merge: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], None]


@dataclass(frozen=True)
class Backend:
    name: str
    # (device, dtype) → (usable?, reason). Must be cheap: it is cached per (device type, dtype, kernel).
    available: Callable[[torch.device, torch.dtype], tuple[bool, str]]
    channel_reduce: Callable[[LayoutView, Sequence[float]], ChannelStats]
    priority: int  # lower is preferred
    # (x, bins, lo, hi) → int64 [bins]; see :func:`histogram` for the semantics
    histogram: Callable[[torch.Tensor, int, float, float], torch.Tensor] | None = None
    scan: ScanKernels | None = None
    # (x, exponent, offset, bins) → int64 [bins]; see :func:`histogram_pow2`
    histogram_pow2: Callable[[torch.Tensor, int, int, int], torch.Tensor] | None = None
    state: StateKernels | None = None  # for accumulator state (float64 / int64 / bool) on a device
    # channel_reduce also takes histogram_grid=(exponent, offset, bins) and counts in the same read
    fused_histogram: bool = False


BACKENDS: Registry[Backend] = Registry("kernel backend")

BACKENDS.register("torch")(
    Backend(
        "torch",
        lambda device, dtype: (True, "reference torch ops"),
        channel_reduce_torch,
        priority=100,
        histogram=histogram_torch,
        scan=ScanKernels(scan_forward_torch, scan_backward_torch),
        histogram_pow2=histogram_pow2_torch,
    )
)

# keyed by the device itself: reading ``device.type`` costs twice the lookup (a call per activation)
_choice_cache: dict[tuple[torch.device, torch.dtype, str | None, str], tuple[Backend, str]] = {}


def select_backend(
    device: torch.device, dtype: torch.dtype, force: str | None = None, kernel: str = "channel_reduce"
) -> tuple[Backend, str]:
    """The backend that runs ``kernel`` on tensors of ``device``/``dtype``, and a sentence saying why."""
    key = (device, dtype, force, kernel)
    chosen = _choice_cache.get(key)
    if chosen is None:
        if kernel not in KERNELS:
            raise ConfigError(f"unknown kernel {kernel!r}; choose one of: {', '.join(KERNELS)}")
        chosen = _forced(device, dtype, force, kernel) if force else _preferred(device, dtype, kernel)
        _choice_cache[key] = chosen
    return chosen


_state_cache: dict[tuple[str, str | None], StateKernels | None] = {}


def state_kernels(device: torch.device, force: str | None = None) -> StateKernels | None:
    """In-place updates for accumulator state on ``device`` (native C++ on CPU), or None when no backend
    offers them there — or the forced backend ``force`` does not — : the accumulators then run their torch
    code."""
    key = (device.type, force)
    if key not in _state_cache:
        candidates = [BACKENDS.get(force)] if force else sorted(map(BACKENDS.get, BACKENDS), key=lambda b: b.priority)
        _state_cache[key] = next(
            (b.state for b in candidates if b.state is not None and b.available(device, torch.float64)[0]), None
        )
    return _state_cache[key]


def _forced(device: torch.device, dtype: torch.dtype, force: str, kernel: str) -> tuple[Backend, str]:
    backend = BACKENDS.get(force)
    if getattr(backend, kernel) is None:
        raise ConfigError(f"kernel backend {force!r} has no {kernel} kernel")
    ok, why = backend.available(device, dtype)
    if not ok:
        raise ConfigError(f"kernel backend {force!r} cannot run on {device.type}/{dtype}: {why}")
    return backend, f"forced: {why}"


def _preferred(device: torch.device, dtype: torch.dtype, kernel: str) -> tuple[Backend, str]:
    reasons = []
    for name in sorted(BACKENDS, key=lambda n: BACKENDS.get(n).priority):
        backend = BACKENDS.get(name)
        if getattr(backend, kernel) is None:
            reasons.append(f"{name} has no {kernel} kernel")
            continue
        ok, why = backend.available(device, dtype)
        if ok:
            return backend, "; ".join([*reasons, f"{name}: {why}"])
        reasons.append(f"{name} unavailable ({why})")
    raise ConfigError(f"no kernel backend runs {kernel} on {device.type}/{dtype}: {'; '.join(reasons)}")


def channel_reduce(
    view: LayoutView,
    thresholds: Sequence[float],
    backend: str | None = None,
    histogram_grid: tuple[int, int, int] | None = None,
) -> ChannelStats:
    """Per-channel statistics of one activation in one read (see :class:`ChannelStats`).

    ``histogram_grid = (exponent, offset, bins)``: a backend that can (the native one) also counts the
    values on that power-of-two grid in the same read, as :func:`histogram_pow2` would
    (``ChannelStats.histogram``); other backends leave ``histogram`` None and the caller counts apart.
    """
    return channel_reducer(view.data.device, view.data.dtype, backend)(view, thresholds, histogram_grid)


def channel_reducer(
    device: torch.device, dtype: torch.dtype, backend: str | None = None
) -> Callable[[LayoutView, Sequence[float], tuple[int, int, int] | None], ChannelStats]:
    """:func:`channel_reduce` for views of ``device``/``dtype``, its backend chosen now: a caller that
    reduces many activations of one kind (a probe's hook) picks it once, not per call."""
    chosen, _ = select_backend(device, dtype, backend)
    if chosen.fused_histogram:
        return chosen.channel_reduce  # takes histogram_grid (None: no counting)

    def reduce(view: LayoutView, thresholds: Sequence[float], histogram_grid: Any = None) -> ChannelStats:
        return chosen.channel_reduce(view, thresholds)  # no fused counts: the caller counts apart

    return reduce


def histogram(x: torch.Tensor, bins: int, lo: float, hi: float, backend: str | None = None) -> torch.Tensor:
    """Counts of the values of ``x`` (any shape) in ``bins`` equal bins over ``[lo, hi]``: int64 ``[bins]``.

    Bin ``j`` holds ``edge[j] <= x < edge[j+1]`` with float64 edges ``edge[j] = lo + j·((hi − lo)/bins)``
    and ``edge[bins] = hi``; the last bin is closed, so ``x == hi`` is counted in it. The comparison is
    exact (a value on an edge goes to the bin that starts there, in every backend). Values below ``lo``
    or above ``hi``, NaN and ±Inf are **not counted** (compare ``counts.sum()`` with ``x.numel()`` to
    see how many were left out). ``lo < hi`` must be finite.
    """
    bins, lo, hi = check_histogram_args(bins, lo, hi)
    chosen, _ = select_backend(x.device, x.dtype, backend, kernel="histogram")
    return chosen.histogram(x.detach(), bins, lo, hi)


def histogram_pow2(
    x: torch.Tensor, exponent: int, offset: int, bins: int, backend: str | None = None
) -> torch.Tensor:
    """Counts of the values of ``x`` (any shape) on a power-of-two grid: int64 ``[bins]``.

    Bin ``i`` holds the ``x`` with ``floor(x / 2**exponent) == offset + i``, i.e. ``[(offset + i)·w,
    (offset + i + 1)·w)`` for ``w = 2**exponent`` — exact for every floating dtype (no edge rounding).
    Values outside the window, NaN and ±Inf are **not counted**. Needs ``−1022 ≤ exponent ≤ 1023`` and
    ``|offset| + bins ≤ 2**53``.
    """
    exponent, offset, bins = check_pow2_args(exponent, offset, bins)
    chosen, _ = select_backend(x.device, x.dtype, backend, kernel="histogram_pow2")
    return chosen.histogram_pow2(x.detach(), exponent, offset, bins)


def kernel_environment() -> dict[str, Any]:
    """What ``layerscope info`` prints: versions, threads, how the native module was built, Triton,
    and for each kernel the backend chosen on CPU and on CUDA (float32) with the reason."""
    import numpy

    from .._optional import has
    from ._native import build_info, native_error

    triton_version = None
    if has("triton"):
        try:
            import triton

            triton_version = triton.__version__
        except Exception as exc:  # a broken install: say so rather than fail
            triton_version = f"installed but import failed: {exc}"
    return {
        "versions": {"torch": torch.__version__, "numpy": numpy.__version__},
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "native": build_info() or {"error": native_error()},
        "triton": triton_version,
        "backends": {kernel: backend_info(kernel) for kernel in KERNELS},
    }


def backend_info(kernel: str = "channel_reduce") -> dict[str, str]:
    """Which backend runs ``kernel`` on float32 tensors on CPU and on CUDA, and why (`layerscope info`)."""
    info = {}
    for dev in ("cpu", "cuda"):
        try:
            backend, why = select_backend(torch.device(dev), torch.float32, kernel=kernel)
            info[dev] = f"{backend.name} — {why}"
        except ConfigError as exc:
            info[dev] = f"none — {exc}"
    return info


# Optional backends register themselves on import; a missing one is not an error.
from . import _native as _native  # noqa: E402
from . import _triton as _triton  # noqa: E402
