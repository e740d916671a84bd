"""``linear_scan``: ``h_t = a_t·h_{t−1} + b_t`` along a time dim, as a ``torch.autograd.Function``.

The kernels come from :mod:`layerscope.kernels` (native C++ on CPU, Triton on CUDA, torch anywhere);
forward and backward are both scans (see :mod:`layerscope.kernels._scan` for the gradient formulas).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .._errors import ConfigError
from ..kernels import ScanKernels, select_backend
from ..kernels._scan import accumulation_dtype
from ._shapes import broadcast_inputs, btd_shape, state_shape

Tensor = torch.Tensor


class _LinearScan(torch.autograd.Function):
    """a, b: [B, T, D] contiguous; h0: [B, D] or None. Returns h: [B, T, D] in a's dtype."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, h0: Tensor | None, kernels: ScanKernels) -> Tensor:
        h0_acc = None if h0 is None else h0.to(accumulation_dtype(a.dtype)).contiguous()
        h = kernels.forward(a, b, h0_acc)  # accumulation dtype (float32 for half inputs)
        ctx.kernels = kernels
        ctx.h0_dtype = None if h0 is None else h0.dtype
        ctx.save_for_backward(a, h, h0_acc)
        return h.to(a.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor | None, None]:
        a, h, h0 = ctx.saved_tensors
        grad_a, grad_b, grad_h0 = ctx.kernels.backward(a, h, h0, grad_h.to(a.dtype).contiguous())
        if grad_h0 is not None:
            grad_h0 = grad_h0.to(ctx.h0_dtype)
        return grad_a.to(a.dtype), grad_b.to(a.dtype), grad_h0, None


def linear_scan(
    a: Tensor, b: Tensor, h0: Tensor | None = None, dim: int = 1, *, backend: str | None = None
) -> Tensor:
    """``h_t = a_t·h_{t−1} + b_t`` along ``dim`` (h_{−1} = ``h0``, or 0), differentiable in a, b and h0.

    Args:
        a, b: broadcastable floating tensors with the time axis at ``dim`` (e.g. ``[B, T, D]``).
            float32/float64/float16/bfloat16; half inputs accumulate in float32.
        h0: initial state, broadcastable to the input shape without ``dim``; None means zeros.
        dim: the time dim (default 1, for ``[B, T, D]``).
        backend: force ``"native"``, ``"triton"`` or ``"torch"``; by default the fastest available
            for the device and dtype (see ``layerscope info``).

    Returns:
        ``h`` with the broadcast shape of ``a`` and ``b`` and their promoted dtype.

    Example:
        >>> a = torch.full((2, 5, 3), 0.5)
        >>> h = linear_scan(a, torch.ones(2, 5, 3))
        >>> h[0, :, 0].tolist()
        [1.0, 1.5, 1.75, 1.875, 1.9375]
    """
    a, b, dim = broadcast_inputs(a, b, dim)
    shape = a.shape
    bsz, t, d = btd_shape(shape, dim)
    if h0 is not None:
        if h0.device != a.device:
            raise ConfigError(f"linear_scan: h0 is on {h0.device} but a is on {a.device}")
        try:
            h0 = h0.expand(state_shape(shape, dim)).reshape(bsz, d)
        except RuntimeError:
            raise ConfigError(
                f"linear_scan: h0 of shape {tuple(h0.shape)} does not broadcast to {state_shape(shape, dim)} "
                f"(the input shape {tuple(shape)} without dim {dim})"
            ) from None
    kernels = select_backend(a.device, a.dtype, backend, kernel="scan")[0].scan
    h = _LinearScan.apply(a.contiguous().view(bsz, t, d), b.contiguous().view(bsz, t, d), h0, kernels)
    return h.view(shape)
