"""Turning a user's device argument into a ``torch.device`` that exists here, or a clear error."""

from __future__ import annotations

import torch

from ._errors import ConfigError


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``None`` stays None (leave the model where it is); anything else must name a usable device."""
    if device is None or (isinstance(device, torch.device) and device.type == "cpu"):
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a device torch knows: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for, but torch {torch.__version__} sees no CUDA "
                              "device here: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {device!r} was asked for, but MPS is not available here: use --device cpu")
    return dev
