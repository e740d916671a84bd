"""Streaming covariance of a layer's channels.

Each position of each sample is one observation, a vector of the layer's channels
(``[N, C, S]`` → ``N·S`` rows of ``C``). The state is the count ``n``, the mean ``μ`` and the co-moment
matrix ``M = Σ (x − μ)(x − μ)ᵀ`` in float64, combined with the matrix form of Chan, Golub & LeVeque's
pairwise update (1979):

    n = n_a + n_b,   δ = μ_b − μ_a,   μ = μ_a + δ·n_b/n,   M = M_a + M_b + δδᵀ·n_a·n_b/n

so that ``merge`` of any split equals one pass over the union of what was absorbed (up to rounding).

**Rows per batch** (option ``covariance_samples``, default 8): a batch contributes the rows of at
most that many of its samples, evenly spaced (``x[::⌈N/8⌉]``, the samples the spectrum uses too), so
that the GEMM below stays a fraction of the forward pass (it costs ``C²·rows``, about a layer's own
FLOPs when every row enters). Every batch contributes; ``n``, ``μ`` and ``M`` are then exactly those of
the rows used (``observations`` counts them), an unbiased estimate of the covariance of all rows.
``covariance_samples=None`` uses every row: the exact covariance of the data.

A batch's own ``M_b`` is one GEMM of the rows used, centred on their mean ``μ_b`` (float64: the mean
over the samples used of the fused reduction's per-sample means, or its batch mean when every sample
is used) rounded to the working precision, ``μ̃_b``; then ``M_b = X Xᵀ − n_b·dd ᵀ`` with ``d = μ_b − μ̃_b``
(no second pass over the data). The GEMM runs in the activation's precision for float32/half
activations (float32 accumulation, relative error of order 1e-6 per batch), in float64 for float64
ones. Rows holding a NaN or ±Inf are left out (counted in ``dropped``).

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
from ._protocol import ACCUMULATORS
from ._sampling import DEFAULT_SAMPLES, check_samples, sample_step
from ._scratch import Scratch

DEFAULT_MAX_CHANNELS = 1024


def kept_channels(channels: int, cap: int) -> torch.Tensor:
    """Indices of the tracked channels: all of them, or ``cap`` evenly spaced ones."""
    if channels <= cap:
        return torch.arange(channels)
    return torch.linspace(0, channels - 1, cap, dtype=torch.float64).round().long()


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@ACCUMULATORS.register("covariance")
class ChannelCovariance:
    """Streaming float64 covariance of the (tracked) channels; see the module docstring."""

    def __init__(self, covariance_max_channels: int = DEFAULT_MAX_CHANNELS,
                 covariance_samples: int | None = DEFAULT_SAMPLES, **_: Any) -> None:
        if covariance_max_channels < 2:
            raise ConfigError(f"covariance_max_channels must be at least 2 (got {covariance_max_channels})")
        self.max_channels = int(covariance_max_channels)
        self.max_samples = check_samples("covariance_samples", covariance_samples)
        self.channels = 0  # the layer's channel count; 0 until the first update
        self.index: torch.Tensor | None = None  # int64 [K]: the tracked channels
        self.count = 0
        self.dropped = 0
        self.mean: torch.Tensor | None = None  # float64 [K]
        self.comoment: torch.Tensor | None = None  # float64 [K, K]
        self._device_index: torch.Tensor | None = None  # ``index`` on the activations' device, if capped
        self._rows, self._gram = Scratch(), Scratch()  # the centred rows, X Xᵀ
        self._weights: tuple[Any, torch.Tensor] = ((), torch.zeros(0))  # (key, [1, N]): see _rows_mean

    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        self._set_channels(view.num_channels)
        step = sample_step(view.num_samples, self.max_samples)
        data = view.data[::step] if step > 1 else view.data  # (n, C, S) or (n, S, C): the samples used
        index = self._index_on(data.device)
        if reduced.all_finite():
            mean = reduced.mean if step == 1 else self._rows_mean(reduced.sample_mean, step)  # (C,) float64
            self._absorb_rows(data, view.channels_last, index, mean if index is None else mean[index])
            return
        # rare path: drop the positions with a non-finite value; their mean is not the reduction's
        rows = (data if view.channels_last else data.transpose(1, 2)).reshape(-1, view.num_channels)  # (n·S, C)
        rows = rows if index is None else rows[:, index]
        ok = torch.isfinite(rows).all(1)
        self.dropped += int((~ok).sum())
        rows = rows[ok]
        if rows.shape[0]:
            mean = rows.to(torch.float64).mean(0)
            work = _work_dtype(rows.dtype)
            shift = mean.to(work)
            x = rows.to(work) - shift  # (m, K)
            self._absorb_gram(x.shape[0], mean, x.T @ x, None if work == torch.float64 else mean - shift)

    def _absorb_rows(self, data: torch.Tensor, channels_last: bool, index: torch.Tensor | None,
                     mean: torch.Tensor) -> None:
        """One copy of the rows used, centred on ``μ̃`` (``mean`` in the working precision), and one GEMM."""
        work = _work_dtype(data.dtype)
        shift = mean.to(work)  # (K,) μ̃
        if channels_last:  # (n, S, C): one observation per row already
            src = data if index is None else data[:, :, index]
            x = torch.sub(src, shift, out=self._rows.get(tuple(src.shape), work, src.device))  # (n, S, K)
            x = x.view(-1, x.shape[-1])  # (n·S, K)
            rows, gram = x.shape[0], torch.mm(x.t(), x, out=self._gram.get((x.shape[1],) * 2, work, x.device))
        else:  # (n, C, S): the channels' rows are contiguous along S
            src = data.transpose(0, 1)  # (C, n, S), a view
            src = src if index is None else src[index]
            x = torch.sub(src, shift[:, None, None], out=self._rows.get(tuple(src.shape), work, src.device))
            x = x.view(x.shape[0], -1)  # (K, n·S)
            rows, gram = x.shape[1], torch.mm(x, x.t(), out=self._gram.get((x.shape[0],) * 2, work, x.device))
        self._absorb_gram(rows, mean, gram, None if work == torch.float64 else mean - shift)

    def _absorb_gram(self, n: int, mean: torch.Tensor, gram: torch.Tensor, d: torch.Tensor | None) -> None:
        """Chan et al. in place, for a batch of ``n`` rows with mean ``mean`` (float64 ``[K]``) and
        ``gram = Σ (x − μ̃)(x − μ̃)ᵀ``: its co-moment is ``gram − n·d dᵀ``, ``d = μ − μ̃`` (None: 0)."""
        if self.mean is None:
            self.count, self.mean = n, mean.to(torch.float64, copy=True)
            self.comoment = gram.to(torch.float64, copy=True)
            if d is not None:
                self.comoment.addr_(d, d, alpha=-n)
            return
        total = self.count + n
        delta = mean - self.mean  # (K,)
        self.comoment.add_(gram)
        if d is not None:
            self.comoment.addr_(d, d, alpha=-n)
        self.comoment.addr_(delta, delta, alpha=self.count * n / total)
        self.mean.add_(delta, alpha=n / total)
        self.count = total

    def _rows_mean(self, sample_mean: torch.Tensor, step: int) -> torch.Tensor:
        """Mean of the rows of the samples ``[::step]``: the mean of their per-sample means (every sample
        has the same number of positions), as one product with cached weights ``[1, N]``."""
        key = (sample_mean.shape[0], step, sample_mean.device)
        if self._weights[0] != key:
            w = torch.zeros(1, key[0], dtype=torch.float64, device=sample_mean.device)
            w[0, ::step] = 1.0 / w[0, ::step].numel()
            self._weights = (key, w)
        return (self._weights[1] @ sample_mean)[0]  # (1, N) @ (N, C) -> (C,)

    def _index_on(self, device: torch.device) -> torch.Tensor | None:
        """The tracked channels on ``device``, or None when every channel is tracked."""
        if self.index.numel() == self.channels:
            return None
        if self._device_index is None or self._device_index.device != device:
            self._device_index = self.index.to(device)
        return self._device_index

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
        """Chan et al.'s update (module docstring) into this accumulator's state, in place (two fused ops on
        [K, K])."""
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
        if other.max_samples != self.max_samples:
            raise ValueError(f"cannot merge a covariance of covariance_samples={other.max_samples} per batch into "
                             f"one of covariance_samples={self.max_samples}: use the same option")
        self._set_channels(other.channels)
        self.dropped += other.dropped
        if other.mean is not None:
            self._absorb(other.count, other.mean, other.comoment)

    def covariance(self) -> torch.Tensor:
        """Population covariance ``M / n`` of the tracked channels (float64 ``[K, K]``)."""
        return self.comoment / max(self.count, 1)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"max_channels": self.max_channels, "covariance_samples": self.max_samples,
                                 "channels": self.channels, "count": self.count, "dropped": self.dropped}
        if self.index is not None:
            state["index"] = self.index.cpu()
        if self.mean is not None:
            # copies: the live state is updated in place
            state.update(mean=self.mean.detach().cpu().clone(), comoment=self.comoment.detach().cpu().clone())
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        # states saved before the option existed used every row
        acc = cls(covariance_max_channels=state["max_channels"], covariance_samples=state.get("covariance_samples"))
        acc.channels, acc.count = int(state["channels"]), int(state["count"])
        acc.dropped = int(state["dropped"])
        if "index" in state:
            acc.index = torch.as_tensor(state["index"], dtype=torch.int64)
        if "mean" in state:
            acc.mean = torch.as_tensor(state["mean"], dtype=torch.float64).clone()
            acc.comoment = torch.as_tensor(state["comoment"], dtype=torch.float64).clone()
        return acc
