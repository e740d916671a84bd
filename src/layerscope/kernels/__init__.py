"""Kernel dispatch: one place that picks a backend for each activation and can say why.

Backends register themselves in :data:`BACKENDS` with a function ``available(tensor) -> (bool, why)``
and the kernels they implement. Order of preference: native (C++, CPU) → triton (CUDA) → torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .._registry import Registry
from ..capture.layout import LayoutView
from ._contract import ChannelStats
from ._torch import channel_reduce_torch

__all__ = ["BACKENDS", "Backend", "ChannelStats", "backend_info", "channel_reduce", "select_backend"]


@dataclass(frozen=True)
class Backend:
    name: str
    # (device type, dtype) → (usable?, reason). Must be cheap: it is cached per (device, dtype).
    available: Callable[[torch.device, torch.dtype], tuple[bool, str]]
    channel_reduce: Callable[[LayoutView, Sequence[float]], ChannelStats]
    priority: int  # lower is preferred


BACKENDS: Registry[Backend] = Registry("kernel backend")

BACKENDS.register("torch")(
    Backend("torch", lambda device, dtype: (True, "reference torch ops"), channel_reduce_torch, priority=100)
)

_choice_cache: dict[tuple[str, torch.dtype, str | None], tuple[Backend, str]] = {}


def select_backend(device: torch.device, dtype: torch.dtype, force: str | None = None) -> tuple[Backend, str]:
    """The backend used for tensors of ``device``/``dtype``, and a sentence saying why."""
    key = (device.type, dtype, force)
    if key not in _choice_cache:
        if force is not None:
            backend = BACKENDS.get(force)
            ok, why = backend.available(device, dtype)
            if not ok:
                from .._errors import ConfigError

                raise ConfigError(f"kernel backend {force!r} cannot run on {device.type}/{dtype}: {why}")
            _choice_cache[key] = (backend, f"forced: {why}")
        else:
            reasons = []
            for name in sorted(BACKENDS, key=lambda n: BACKENDS.get(n).priority):
                backend = BACKENDS.get(name)
                ok, why = backend.available(device, dtype)
                if ok:
                    _choice_cache[key] = (backend, "; ".join([*reasons, f"{name}: {why}"]))
                    break
                reasons.append(f"{name} unavailable ({why})")
    return _choice_cache[key]


def channel_reduce(view: LayoutView, thresholds: Sequence[float], backend: str | None = None) -> ChannelStats:
    chosen, _ = select_backend(view.data.device, view.data.dtype, backend)
    return chosen.channel_reduce(view, thresholds)


def backend_info() -> dict[str, str]:
    """Which backend handles float32 activations on CPU and on CUDA, and why (for `layerscope info`)."""
    info = {}
    for dev in ("cpu", "cuda"):
        backend, why = select_backend(torch.device(dev), torch.float32)
        info[dev] = f"{backend.name} — {why}"
    return info


# Optional backends register themselves on import; a missing one is not an error.
from . import _native as _native  # noqa: E402,F401
