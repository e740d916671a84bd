"""Streaming covariance of a layer's channels.

Each position of each sample is one observation, a vector of the layer's channels
(``[N, C, S]`` → ``N·S`` rows of ``C``). The state is the count ``n``, the mean ``μ`` and the co-moment
matrix ``M = Σ (x − μ)(x − μ)ᵀ`` in float64, combined with the matrix form of Chan, Golub & LeVeque's
pairwise update (1979):

    n = n_a + n_b,   δ = μ_b − μ_a,   μ = μ_a + δ·n_b/n,   M = M_a + M_b + δδᵀ·n_a·n_b/n

so that ``merge`` of any split equals one pass over the union (up to rounding). A batch's own ``M_b``
is a GEMM of the rows centred on the batch mean (taken from the fused channel reduction, in float64):
in the activation's precision for float32/half activations (float32 accumulation, relative error of
order 1e-6 per batch), in float64 for float64 ones. Rows holding a NaN or ±Inf are left out (counted
in ``dropped``).

Wide layers: with more than ``covariance_max_channels`` channels (default 1024, i.e. an 8 MiB matrix)
only that many *evenly spaced* channels are tracked (``round(linspace(0, C − 1, cap))``), a fixed
choice that does not depend on the data, so merges stay exact; the analysis names the channels kept.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Self

from .._errors import ConfigError
from ..capture.layout import LayoutView
from ..kernels import ChannelStats
from ..kernels._torch import workspace
from ._protocol import ACCUMULATORS

DEFAULT_MAX_CHANNELS = 1024


def comoment_combine(
    n_a: int, mean_a: torch.Tensor, m_a: torch.Tensor, n_b: int, mean_b: torch.Tensor, m_b: torch.Tensor,
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Chan et al. (1979) for co-moment matrices: combine ``(n, μ [C], M [C, C])`` of two disjoint parts."""
    n = n_a + n_b
    if n == 0:
        return 0, mean_a, m_a
    delta = mean_b - mean_a  # (C,)
    mean = mean_a + delta * (n_b / n)
    comoment = m_a + m_b + torch.outer(delta, delta) * (n_a * n_b / n)
    return n, mean, comoment


def kept_channels(channels: int, cap: int) -> torch.Tensor:
    """Indices of the tracked channels: all of them, or ``cap`` evenly spaced ones."""
    if channels <= cap:
        return torch.arange(channels)
    return torch.linspace(0, channels - 1, cap, dtype=torch.float64).round().long()


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scratch(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A contiguous scratch tensor from the kernels' per-thread workspace (reused across batches: a
    fresh activation-sized allocation per update costs page faults comparable to the GEMM)."""
    return workspace(torch.empty((), dtype=dtype, device=device).expand(shape))


def centred_columns(view: LayoutView, index: torch.Tensor | None, mean: torch.Tensor) -> torch.Tensor:
    """``X [K, n]``: the tracked channels (``index``, or all) of every position, minus ``mean`` (float64
    ``[K]``), in the working precision. One copy of the activation (into a reused scratch buffer),
    the centring fused into it; valid until the next use of the workspace."""
    work = _work_dtype(view.data.dtype)
    if view.channels_last:  # (N, S, C) -> (n, C): already one observation per row
        rows = view.data.reshape(-1, view.num_channels)
        rows = rows if index is None else rows[:, index]
        out = _scratch(tuple(rows.shape), work, rows.device)
        return torch.sub(rows, mean.to(work), out=out).T  # (K, n), a transposed view
    src = view.data.transpose(0, 1)  # (N, C, S) -> (C, N, S), a view
    src = src if index is None else src[index]
    out = _scratch(tuple(src.shape), work, src.device)  # contiguous (K, N, S)
    torch.sub(src, mean.to(work)[:, None, None], out=out)
    return out.view(src.shape[0], -1)


def batch_comoment(x: torch.Tensor, mean: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(n, μ, M)`` from ``x [K, n]``: the observations minus ``mean`` (float64, their mean) rounded
    to ``x``'s precision, ``μ̃``. Their mean is then ``d = μ − μ̃`` (not 0), and the co-moment about μ is
    ``x xᵀ − n·d dᵀ`` — no second pass over the data.
    """
    n = x.shape[1]
    d = mean - mean.to(x.dtype).to(torch.float64)  # (K,): 0 for float64 observations
    m = (x @ x.T).to(torch.float64).addr_(d, d, alpha=-n)  # (K, n) @ (n, K) -> (K, K)
    return n, mean, m


@ACCUMULATORS.register("covariance")
class ChannelCovariance:
    """Streaming float64 covariance of the (tracked) channels; see the module docstring."""

    def __init__(self, covariance_max_channels: int = DEFAULT_MAX_CHANNELS, **_: Any) -> None:
        if covariance_max_channels < 2:
            raise ConfigError(f"covariance_max_channels must be at least 2 (got {covariance_max_channels})")
        self.max_channels = int(covariance_max_channels)
        self.channels = 0  # the layer's channel count; 0 until the first update
        self.index: torch.Tensor | None = None  # int64 [K]: the tracked channels
        self.count = 0
        self.dropped = 0
        self.mean: torch.Tensor | None = None  # float64 [K]
        self.comoment: torch.Tensor | None = None  # float64 [K, K]

    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        self._set_channels(view.num_channels)
        capped = self.index.numel() < view.num_channels
        index = self.index.to(view.data.device) if capped else None
        if int(reduced.count.min()) == view.num_samples * view.num_positions:  # every value finite
            mean = reduced.mean if index is None else reduced.mean[index]
            self._absorb(*batch_comoment(centred_columns(view, index, mean), mean))
            return
        # rare path: drop the positions with a non-finite value; their mean is not the reduction's
        rows = view.nsc().reshape(-1, view.num_channels)  # (N·S, C)
        rows = rows if index is None else rows[:, index]
        ok = torch.isfinite(rows).all(1)
        self.dropped += int((~ok).sum())
        rows = rows[ok]
        if rows.shape[0]:
            mean = rows.to(torch.float64).mean(0)
            x = (rows.to(_work_dtype(rows.dtype)) - mean.to(_work_dtype(rows.dtype))).T
            self._absorb(*batch_comoment(x, mean))

    def _set_channels(self, channels: int) -> None:
        if self.index is None:
            self.channels = channels
            self.index = kept_channels(channels, self.max_channels)
        elif channels != self.channels:
            raise ValueError(
                f"channel count changed from {self.channels} to {channels}: a layer's outputs must keep "
                "the same number of channels (set its layout explicitly)"
            )

    def _absorb(self, n: int, mean: torch.Tensor, comoment: torch.Tensor) -> None:
        """:func:`comoment_combine` into this accumulator's state, in place (two fused ops on [K, K])."""
        if self.mean is None:
            self.count, self.mean, self.comoment = n, mean.clone(), comoment.clone()
            return
        total = self.count + n
        if total == 0:
            return
        delta = mean.to(self.mean.device) - self.mean  # (K,)
        self.comoment.add_(comoment.to(self.mean.device)).addr_(delta, delta, alpha=self.count * n / total)
        self.mean.add_(delta, alpha=n / total)
        self.count = total

    def merge(self, other: Self) -> None:
        if other.index is None:
            return
        if other.max_channels != self.max_channels:
            raise ValueError(f"cannot merge a covariance capped at {other.max_channels} channels into one "
                             f"capped at {self.max_channels}")
        self._set_channels(other.channels)
        self.dropped += other.dropped
        if other.mean is not None:
            self._absorb(other.count, other.mean, other.comoment)

    def covariance(self) -> torch.Tensor:
        """Population covariance ``M / n`` of the tracked channels (float64 ``[K, K]``)."""
        return self.comoment / max(self.count, 1)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"max_channels": self.max_channels, "channels": self.channels,
                                 "count": self.count, "dropped": self.dropped}
        if self.index is not None:
            state["index"] = self.index.cpu()
        if self.mean is not None:
            # copies: the live state is updated in place
            state.update(mean=self.mean.detach().cpu().clone(), comoment=self.comoment.detach().cpu().clone())
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        acc = cls(covariance_max_channels=state["max_channels"])
        acc.channels, acc.count = int(state["channels"]), int(state["count"])
        acc.dropped = int(state["dropped"])
        if "index" in state:
            acc.index = torch.as_tensor(state["index"], dtype=torch.int64)
        if "mean" in state:
            acc.mean = torch.as_tensor(state["mean"], dtype=torch.float64).clone()
            acc.comoment = torch.as_tensor(state["comoment"], dtype=torch.float64).clone()
        return acc
