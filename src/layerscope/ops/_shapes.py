"""Argument checks shared by the scans: broadcasting, dtype, the time dim, the [B, T, D] view."""

from __future__ import annotations

import math

import torch

from .._errors import ConfigError

Tensor = torch.Tensor


def broadcast_inputs(a: Tensor, b: Tensor, dim: int) -> tuple[Tensor, Tensor, int]:
    """``a`` and ``b`` broadcast to one shape and one floating dtype; ``dim`` made non-negative."""
    if a.device != b.device:
        raise ConfigError(f"linear_scan: a is on {a.device} but b is on {b.device}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if not dtype.is_floating_point:
        raise ConfigError(f"linear_scan: needs floating-point a and b, got {a.dtype} and {b.dtype}")
    a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    if a.dim() == 0:
        raise ConfigError("linear_scan: a and b need at least one (time) dimension")
    if not -a.dim() <= dim < a.dim():
        raise ConfigError(f"linear_scan: dim={dim} is out of range for a {a.dim()}-D input {tuple(a.shape)}")
    return a, b, dim % a.dim()


def btd_shape(shape: torch.Size, dim: int) -> tuple[int, int, int]:
    """``(B, T, D)``: the dims before ``dim`` flattened, the time dim, the dims after it flattened."""
    return math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1 :])


def state_shape(shape: torch.Size, dim: int) -> tuple[int, ...]:
    """Shape of h0: the input's shape without the time dim."""
    return tuple(shape[:dim]) + tuple(shape[dim + 1 :])
