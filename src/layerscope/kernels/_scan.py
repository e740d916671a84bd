"""Linear recurrence ``h_t = a_t·h_{t−1} + b_t``: the kernel contract and the torch reference.

Every backend works on ``[B, T, D]`` C-contiguous tensors (``layerscope.ops.linear_scan`` reshapes to
that) and returns results in the accumulation dtype: float64 for float64 inputs, float32 otherwise.

Backward (for ``L(h)`` with ``grad_h = ∂L/∂h``)::

    g_t      = grad_h_t + a_{t+1}·g_{t+1}      (g_{T−1} = grad_h_{T−1}: a reverse scan, a shifted by one)
    grad_b_t = g_t
    grad_a_t = g_t·h_{t−1}                    (h_{−1} = h0, or 0)
    grad_h0  = a_0·g_0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class ScanKernels:
    # (a, b, h0 | None) → h;  a, b: [B, T, D]; h0: [B, D] in the accumulation dtype
    forward: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    # (a, h, h0 | None, grad_h) → (grad_a, grad_b, grad_h0 | None)
    backward: Callable[[Tensor, Tensor, Tensor | None, Tensor], tuple[Tensor, Tensor, Tensor | None]]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def scan_forward_torch(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    """Chunked scan in torch ops: about 2·√T vectorised steps instead of T.

    Time is cut into K chunks of L ≈ √T steps (padded with a = 1, b = 0). (1) Every chunk is scanned
    from a zero state at once, step by step over L, keeping the running product P of its a's;
    (2) the chunk carries are chained over K: H_k = P_{k,L−1}·H_{k−1} + h_{k,L−1}; (3) each step adds
    P·H_{k−1} (a zero carry is not added, so an overflowing P cannot turn it into NaN). The three phases
    of Blelloch's chunked scan ("Prefix sums and their applications", 1990), as the native kernel does.
    """
    acc = accumulation_dtype(a.dtype)
    bsz, t, d = a.shape
    chunk = max(1, math.isqrt(max(t - 1, 0)) + 1)
    k = -(-t // chunk)
    a4, b4 = _chunked(a.to(acc), k, chunk, 1.0), _chunked(b.to(acc), k, chunk, 0.0)  # [B, K, L, D]
    h, prod = torch.empty_like(b4), torch.empty_like(a4)
    state, running = torch.zeros_like(b4[:, :, 0]), torch.ones_like(a4[:, :, 0])
    for i in range(chunk):  # (1) local scans, all chunks at once
        state = a4[:, :, i] * state + b4[:, :, i]
        running = running * a4[:, :, i]
        h[:, :, i], prod[:, :, i] = state, running
    carry = torch.zeros(bsz, k, d, dtype=acc, device=a.device)  # state entering each chunk
    entering = h0.to(acc) if h0 is not None else torch.zeros(bsz, d, dtype=acc, device=a.device)
    for j in range(k):  # (2) chain the carries
        carry[:, j] = entering
        entering = prod[:, j, -1] * entering + h[:, j, -1]
    carry = carry.unsqueeze(2)  # [B, K, 1, D]
    h += prod.mul_(carry).masked_fill_(carry == 0, 0.0)  # (3), in place: no full-size temporaries
    return h.view(bsz, k * chunk, d)[:, :t]


def _chunked(x: Tensor, k: int, chunk: int, pad_value: float) -> Tensor:
    """[B, T, D] → [B, K, L, D], padding the time axis with pad_value (a copy only when T < K·L)."""
    bsz, t, d = x.shape
    if t < k * chunk:
        x = torch.nn.functional.pad(x, (0, 0, 0, k * chunk - t), value=pad_value)
    return x.reshape(bsz, k, chunk, d)


def scan_backward_torch(
    a: Tensor, h: Tensor, h0: Tensor | None, grad_h: Tensor
) -> tuple[Tensor, Tensor, Tensor | None]:
    acc = h.dtype
    a = a.to(acc)
    a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)  # a_{t+1}; 0 after the end
    g = scan_forward_torch(a_next.flip(1), grad_h.to(acc).flip(1), None).flip(1)  # [B, T, D]
    first = h0.to(acc).unsqueeze(1) if h0 is not None else torch.zeros_like(h[:, :1])
    h_prev = torch.cat([first, h[:, :-1]], dim=1)
    grad_h0 = a[:, 0] * g[:, 0] if h0 is not None else None
    return g * h_prev, g, grad_h0
