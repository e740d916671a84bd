"""Reference backend in torch ops: any device, any floating dtype.

Several passes over the activation (``var_mean``, ``amin``, ``amax``, one comparison per threshold);
the native and Triton backends do the same work in one read.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import torch

from ..capture.layout import LayoutView
from ._contract import ChannelStats


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


_local = threading.local()


def workspace(like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A scratch tensor shaped like ``like``, reused across calls (per thread, device and dtype).

    Elementwise results written into a reused buffer avoid a fresh allocation — and its page faults —
    per operation, which is most of the cost of torch reductions on large CPU activations. The buffer
    is as large as the largest activation seen; :func:`release_workspace` frees it.
    """
    dtype = dtype or like.dtype
    key = (like.device, dtype)
    cache: dict = _local.__dict__.setdefault("buffers", {})
    buf = cache.get(key)
    if buf is None or buf.numel() < like.numel():
        # a normal tensor even when first asked for under inference_mode: it is reused outside it too
        with torch.inference_mode(False):
            buf = cache[key] = torch.empty(like.numel(), dtype=dtype, device=like.device)
    return buf[: like.numel()].view(like.shape)


def release_workspace() -> None:
    _local.__dict__.pop("buffers", None)


def channel_reduce_torch(view: LayoutView, thresholds: Sequence[float]) -> ChannelStats:
    # Reduce along the positions S in the tensor's own memory order ([N, C, S] or [N, S, C]) to
    # per-sample partials [N, C] first, then over N: inner reductions stay vectorised and no
    # transposed copy is made. Per-sample partials are exact integers or float sums over S only.
    x = view.data
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(_compute_dtype(x))
    pos_dim = 1 if view.channels_last else 2
    if x.numel() == 0:  # no sample or no position: torch's amin/amax refuse an empty reduction
        return _empty(x.shape[0], x.shape[3 - pos_dim], len(thresholds), x.device)
    with torch.no_grad():
        sample_sum = x.sum(dim=pos_dim).double()  # [N, C]
        if bool(torch.isfinite(sample_sum).all()):
            return _reduce_finite(x, pos_dim, sample_sum, thresholds)
        return _reduce_masked(view.nsc().double(), thresholds)


def _empty(n: int, c: int, num_thresholds: int, device: torch.device) -> ChannelStats:
    """The statistics of no values, as the contract gives them (sample means NaN: no position)."""
    zeros = torch.zeros(c, dtype=torch.int64, device=device)
    real = torch.zeros(c, dtype=torch.float64, device=device)
    return ChannelStats(
        count=zeros, mean=real, m2=real.clone(), min=torch.full_like(real, math.inf),
        max=torch.full_like(real, -math.inf), zeros=zeros.clone(),
        above=torch.zeros((num_thresholds, c), dtype=torch.int64, device=device), nan=zeros.clone(),
        inf=zeros.clone(), sample_mean=torch.full((n, c), math.nan, dtype=torch.float64, device=device),
    )


def _count(x: torch.Tensor, op, value: float, pos_dim: int) -> torch.Tensor:
    """Per-channel count of ``op(x, value)``: 0/1 written as floats into the workspace and summed
    (exact: per-sample partials ≤ S < 2²⁴ for float32 are integers), then int64 over N."""
    if x.shape[pos_dim] >= 2**24 and x.dtype != torch.float64:  # float32 sums would stop being exact
        return op(x, value).sum(dim=pos_dim, dtype=torch.int64).sum(dim=0)
    flags = op(x, value, out=workspace(x))
    return flags.sum(dim=pos_dim).round_().to(torch.int64).sum(dim=0)


def _reduce_finite(
    x: torch.Tensor, pos_dim: int, sample_sum: torch.Tensor, thresholds: Sequence[float]
) -> ChannelStats:
    n, s = x.shape[0], x.shape[pos_dim]
    c = sample_sum.shape[1]
    total = n * s
    mean = sample_sum.sum(dim=0) / total  # [C] float64
    # M2 = Σ (x − mean)², with the mean subtracted before squaring (no Σx² − (Σx)²/n cancellation).
    shape = (1, 1, c) if pos_dim == 1 else (1, c, 1)
    centred = torch.sub(x, mean.to(x.dtype).view(shape), out=workspace(x))
    m2 = centred.square_().sum(dim=pos_dim).double().sum(dim=0)
    # the float32 mean used for centring differs from the float64 mean by δ: correct M2 exactly
    delta = mean.to(x.dtype).double() - mean
    m2 = (m2 - total * delta * delta).clamp(min=0.0)
    zeros_i = torch.zeros(c, dtype=torch.int64, device=x.device)
    above = [_count(x, torch.gt, t, pos_dim) for t in thresholds]
    return ChannelStats(
        count=torch.full((c,), total, dtype=torch.int64, device=x.device),
        mean=mean,
        m2=m2,
        min=x.amin(dim=pos_dim).amin(dim=0).double(),
        max=x.amax(dim=pos_dim).amax(dim=0).double(),
        zeros=_count(x, torch.eq, 0.0, pos_dim),
        above=torch.stack(above) if above else torch.zeros((0, c), dtype=torch.int64, device=x.device),
        nan=zeros_i,
        inf=zeros_i.clone(),
        sample_mean=sample_sum / s,
    )


def _reduce_masked(x: torch.Tensor, thresholds: Sequence[float]) -> ChannelStats:
    """Slow path, taken only when a batch holds NaN or ±Inf: statistics of the finite values.

    ``x`` is float64 ``[N, S, C]``.
    """
    dims = (0, 1)
    finite = torch.isfinite(x)
    nan = torch.isnan(x).sum(dim=dims)
    inf = torch.isinf(x).sum(dim=dims)
    xz = torch.where(finite, x, 0.0)
    count = finite.sum(dim=dims)
    sample_count = finite.sum(dim=1)  # [N, C]
    sample_mean = xz.sum(dim=1) / sample_count  # NaN where a sample has no finite value
    mean = xz.sum(dim=dims) / count.clamp(min=1)
    m2 = torch.where(finite, (x - mean) ** 2, 0.0).sum(dim=dims)
    inf_t = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    above = [(finite & (x > t)).sum(dim=dims) for t in thresholds]
    return ChannelStats(
        count=count,
        mean=mean,
        m2=m2,
        min=torch.where(finite, x, inf_t).amin(dim=dims),
        max=torch.where(finite, x, -inf_t).amax(dim=dims),
        zeros=(x == 0).sum(dim=dims),
        above=torch.stack(above) if above else torch.zeros((0, x.shape[2]), dtype=torch.int64, device=x.device),
        nan=nan,
        inf=inf,
        sample_mean=sample_mean,
    )
