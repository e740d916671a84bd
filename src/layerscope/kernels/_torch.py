"""Reference backend in torch ops: any device, any floating dtype.

Several passes over the activation (``var_mean``, ``amin``, ``amax``, one comparison per threshold);
the native and Triton backends do the same work in one read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..capture.layout import LayoutView
from ._contract import ChannelStats


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def channel_reduce_torch(view: LayoutView, thresholds: Sequence[float]) -> ChannelStats:
    # x: [N, S, C] — reductions run over dims (0, 1); a transposed view costs nothing here.
    x = view.nsc()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(_compute_dtype(x))
    n, s, c = x.shape
    with torch.no_grad():
        sample_sum = x.sum(dim=1, dtype=torch.float64)  # [N, C]
        if bool(torch.isfinite(sample_sum).all()):
            return _reduce_finite(x, sample_sum, thresholds)
        return _reduce_masked(x, thresholds)


def _reduce_finite(x: torch.Tensor, sample_sum: torch.Tensor, thresholds: Sequence[float]) -> ChannelStats:
    n, s, c = x.shape
    dims = (0, 1)
    var, mean = torch.var_mean(x, dim=dims, correction=0)  # [C]
    count = torch.full((c,), n * s, dtype=torch.int64, device=x.device)
    zeros_i = torch.zeros(c, dtype=torch.int64, device=x.device)
    above = torch.stack([(x > t).sum(dim=dims) for t in thresholds]) if thresholds else (
        torch.zeros((0, c), dtype=torch.int64, device=x.device)
    )
    return ChannelStats(
        count=count,
        mean=mean.double(),
        m2=var.double() * (n * s),
        min=x.amin(dim=dims).double(),
        max=x.amax(dim=dims).double(),
        zeros=(x == 0).sum(dim=dims),
        above=above,
        nan=zeros_i,
        inf=zeros_i.clone(),
        sample_mean=sample_sum / s,
    )


def _reduce_masked(x: torch.Tensor, thresholds: Sequence[float]) -> ChannelStats:
    """Slow path, taken only when a batch holds NaN or ±Inf: statistics of the finite values."""
    dims = (0, 1)
    x = x.double()
    finite = torch.isfinite(x)
    nan = torch.isnan(x).sum(dim=dims)
    inf = torch.isinf(x).sum(dim=dims)
    xz = torch.where(finite, x, 0.0)
    count = finite.sum(dim=dims)
    sample_count = finite.sum(dim=1)  # [N, C]
    sample_mean = xz.sum(dim=1) / sample_count  # NaN where a sample has no finite value
    safe = count.clamp(min=1)
    mean = xz.sum(dim=dims) / safe
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
        above=torch.stack(above) if above else torch.zeros((0, x.shape[2]), dtype=torch.int64),
        nan=nan,
        inf=inf,
        sample_mean=sample_mean,
    )
