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

The state is kept as *shifted sums* about a fixed reference ``r`` (the first batch's channel means,
rounded to the working precision): ``n``, ``s = Σ (x − r)`` and ``G = Σ (x − r)(x − r)ᵀ`` in float64, so
that a batch costs one copy of the rows used, shifted by ``r`` and written next to a column of ones,
and one GEMM of that ``[rows, K + 1]`` block with itself, which gives ``G_b`` and ``s_b`` together
(``[[G_b, s_b], [s_bᵀ, n_b]]``); the float64 state adds it. Then ``μ = r + s/n`` and
``M = G − s sᵀ/n`` (read when asked). The GEMM runs in the activation's precision for float32/half
activations (float32 accumulation, relative error of order 1e-6 of ``Σ (x − r)²`` per batch), in
float64 for float64 ones; ``merge`` and ``state_dict`` go through ``(n, μ, M)`` and the formula above,
and the reference moves to the merged mean (exact: ``s`` and ``G`` are re-expressed about it). Rows
holding a NaN or ±Inf are left out (counted in ``dropped``).

On the CPU, with the native extension built, an all-finite float32/float64 batch of an uncapped layer
goes through one native call instead (csrc/covariance.cpp): the same shift in the activation's
precision, ``G``, ``s`` and ``n`` added straight into the float64 state, products summed in the
activation's precision over chunks of at most 512 rows and then in float64; from the second batch of
a shape on its ctypes arguments are a per-layer plan (no view and no torch op per batch). The torch
code above is the reference, serves every other case and is forced with ``backend="torch"``.

Wide layers: with more than ``covariance_max_channels`` channels (default 1024, i.e. an 8 MiB matrix)
only that many *evenly spaced* channels are tracked (``round(linspace(0, C − 1, cap))``), a fixed
choice that does not depend on the data, so merges stay exact; the analysis names the channels kept.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from typing_extensions import Self

from .._errors import ConfigError
from ..capture.layout import LayoutView
from ..kernels import ChannelStats
from ..kernels._native_accumulate import all_finite_native, covariance_native, covariance_plan
from ..kernels._torch import workspace
from ._planned import Planned, batch_key
from ._protocol import ACCUMULATORS
from ._sampling import DEFAULT_SAMPLES, check_samples, sample_step
from ._scratch import SMALL, Scratch

DEFAULT_MAX_CHANNELS = 1024


def kept_channels(channels: int, cap: int) -> torch.Tensor:
    """Indices of the tracked channels: all of them, or ``cap`` evenly spaced ones."""
    if channels <= cap:
        return torch.arange(channels)
    return torch.linspace(0, channels - 1, cap, dtype=torch.float64).round().long()


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@ACCUMULATORS.register("covariance")
class ChannelCovariance(Planned):
    """Streaming float64 covariance of the (tracked) channels; see the module docstring."""

    _TRANSIENT: ClassVar[dict[str, Any]] = {"_native_plan": (None, None), "_plan": None}

    def __init__(self, covariance_max_channels: int = DEFAULT_MAX_CHANNELS,
                 covariance_samples: int | None = DEFAULT_SAMPLES, backend: str | None = None,
                 **_: Any) -> None:
        if covariance_max_channels < 2:
            raise ConfigError(f"covariance_max_channels must be at least 2 (got {covariance_max_channels})")
        self.max_channels = int(covariance_max_channels)
        self.max_samples = check_samples("covariance_samples", covariance_samples)
        self.channels = 0  # the layer's channel count; 0 until the first update
        self.index: torch.Tensor | None = None  # int64 [K]: the tracked channels
        self.count = 0
        self.dropped = 0
        self._ref: torch.Tensor | None = None  # float64 [K]: the reference r (None until data arrives)
        self._sums: torch.Tensor | None = None  # float64 [K+1, K+1]: [[G, s], [sᵀ, n]] about r
        self._ref_work: torch.Tensor | None = None  # r in the working precision (r is exactly its value)
        self._device_index: torch.Tensor | None = None  # ``index`` on the activations' device, if capped
        self._rows: tuple[Any, torch.Tensor | None] = ((), None)  # (key, [rows, K+1] with a ones column)
        self._gram = Scratch()
        self._plan: tuple[Any, ...] | None = None  # (batch key, buffers and views): see _absorb_rows
        # all-finite float32/float64 CPU batches of uncapped layers go through one native call
        # (csrc/covariance.cpp) unless the torch kernels are forced; the torch code is the reference
        self._native = backend != "torch"
        self._native_plan: tuple[Any, Any] = (None, None)  # (batch key, covariance_plan) for that call
        # the steady state of that call for one batch shape: None, or (batch key, state and reference it
        # writes and reads, call, arguments, rows per batch); see _plan_fast
        self._fast: tuple[Any, ...] | None = None


    # -- the state as (n, μ, M) -----------------------------------------------------------------
    @property
    def mean(self) -> torch.Tensor | None:
        """float64 ``[K]``: ``r + s/n`` (None before any row)."""
        if self._sums is None:
            return None
        k = self._ref.shape[0]
        return self._ref + self._sums[k, :k] / max(self.count, 1)

    @property
    def comoment(self) -> torch.Tensor | None:
        """float64 ``[K, K]``: ``M = Σ (x − μ)(x − μ)ᵀ = G − s sᵀ/n`` (None before any row)."""
        if self._sums is None:
            return None
        k = self._ref.shape[0]
        s = self._sums[k, :k]
        return torch.addr(self._sums[:k, :k], s, s, alpha=-1.0 / max(self.count, 1))

    def _set_moments(self, n: int, mean: torch.Tensor, comoment: torch.Tensor) -> None:
        """State ``(n, μ, M)`` about the reference ``r = μ`` (``s = 0``, ``G = M``)."""
        k = mean.shape[0]
        sums = torch.zeros(k + 1, k + 1, dtype=torch.float64, device=mean.device)
        sums[:k, :k] = comoment
        sums[k, k] = n
        self.count, self._ref, self._sums, self._ref_work = n, mean.to(torch.float64, copy=True), sums, None
        self._plan, self._native_plan = None, (None, None)

    # -- update ---------------------------------------------------------------------------------
    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        fast = self._planned(view)  # the usual batch: one native call, no view and no torch op
        if fast is not None and all_finite_native(reduced):
            fast[3](view.data.data_ptr(), *fast[4])
            self.count += fast[5]
            return
        self._update_general(view, reduced)
        if self._native and self._sums is not None:  # plan again after a batch that did not fit
            self._replan(view)

    def _holds(self, fast: tuple[Any, ...]) -> bool:
        return fast[1] is self._sums and fast[2] is self._ref

    def _plan_fast(self, view: LayoutView) -> tuple[Any, ...] | None:
        """The native call of the general path with its arguments fixed for batches like ``view.data`` (the
        rows used, ``x[::step]``, start where ``x`` does: no view per batch), with the state and reference
        it uses (checked by identity on each batch: a change of precision, a merge or a restored state
        replace them). A batch takes it when it has the same shape, strides, dtype and layout and is all
        finite. None when it cannot run: capped layers, other dtypes and devices."""
        data = view.data
        if (self.index.numel() != self.channels or self._ref_work is None
                or self._ref_work.dtype != _work_dtype(data.dtype)):
            return None
        step = sample_step(data.shape[0], self.max_samples)
        used = data[::step]
        plan = covariance_plan(used, view.channels_last, self._ref, self._sums)
        if plan is None:
            return None
        rows = used.shape[0] * used.shape[1 if view.channels_last else 2]
        return batch_key(view), self._sums, self._ref, *plan, rows

    def _update_general(self, view: LayoutView, reduced: ChannelStats) -> None:
        self._set_channels(view.num_channels)
        step = sample_step(view.num_samples, self.max_samples)
        data = view.data[::step] if step > 1 else view.data  # (n, C, S) or (n, S, C): the samples used
        index = self._index_on(data.device)
        if all_finite_native(reduced) if self._native else reduced.all_finite():
            if self._ref_work is None or self._ref_work.dtype != _work_dtype(data.dtype):
                self._start(reduced.mean if index is None else reduced.mean[index], _work_dtype(data.dtype))
            self._absorb_rows(data, view.channels_last, index)
            return
        # rare path: drop the positions with a non-finite value
        rows = (data if view.channels_last else data.transpose(1, 2)).reshape(-1, view.num_channels)  # (n·S, C)
        rows = rows if index is None else rows[:, index]
        ok = torch.isfinite(rows).all(1)
        self.dropped += int((~ok).sum())
        rows = rows[ok]
        if rows.shape[0]:
            work = _work_dtype(rows.dtype)
            if self._ref_work is None or self._ref_work.dtype != work:
                self._start(rows.to(torch.float64).mean(0), work)
            x = torch.cat([rows.to(work) - self._ref_work, rows.new_ones(rows.shape[0], 1, dtype=work)], 1)
            self._add_gram(x.T @ x, x.shape[0])

    def _start(self, mean: torch.Tensor, work: torch.dtype) -> None:
        """Fix the reference for GEMMs in ``work``: ``mean`` rounded to it on the first batch, else the
        current reference rounded to it (the sums are re-expressed about it, exactly)."""
        target = (mean if self._sums is None else self._ref).to(work)
        if self._sums is None:
            k = target.shape[0]
            self._sums = torch.zeros(k + 1, k + 1, dtype=torch.float64, device=target.device)
            self._ref = target.to(torch.float64)
        else:
            self._rebase(target.to(torch.float64))
        self._ref_work = target
        self._plan, self._native_plan = None, (None, None)  # they hold the reference and state of the last batch

    def _rebase(self, ref: torch.Tensor) -> None:
        """Re-express ``s`` and ``G`` about ``ref``: ``[x − r′; 1] = T [x − r; 1]`` with ``T = [[I, δ], [0, 1]]``,
        ``δ = r − r′``, so the sums become ``T S Tᵀ``."""
        k = ref.shape[0]
        t = torch.eye(k + 1, dtype=torch.float64, device=self._sums.device)
        t[:k, k] = self._ref.to(t.device) - ref.to(t.device)
        self._sums = t @ self._sums @ t.T
        self._ref = ref.to(self._sums.device)

    def _absorb_rows(self, data: torch.Tensor, channels_last: bool, index: torch.Tensor | None) -> None:
        """One copy of the rows used, shifted by ``r``, next to a column (row) of ones, and one GEMM."""
        if index is None and self._native:
            key = (data.shape, data.stride(), data.dtype, data.device, channels_last)
            native = self._native_plan
            if native[0] != key:  # a new shape or reference (_start and _set_moments reset the plan)
                native = self._native_plan = (key, covariance_plan(data, channels_last, self._ref, self._sums))
            if native[1] is not None:
                covariance_native(data, native[1])  # shift, Xᵀ X, Σx and the row count, into the state
                self.count += data.shape[0] * data.shape[1 if channels_last else 2]
                return
        plan = self._plan
        if index is None and plan is not None and plan[0] == (data.shape, data.dtype, channels_last):
            _, dst, a, b, gram, n, ref = plan  # the usual case: the buffers and views of the last batch
            torch.sub(data if channels_last else data.transpose(0, 1), ref, out=dst)
            self._sums += torch.mm(a, b, out=gram)
            self.count += n
            return
        work = self._ref_work.dtype
        if channels_last:  # (n, S, C): one observation per row already -> buffer (n, S, K+1)
            src = data if index is None else data[:, :, index]
            n, s, k = src.shape
            rows = self._rows_buffer((n, s, k + 1), work, src.device, channels_last)  # last column ones
            dst = rows[:, :, :k]
            x = rows.view(n * s, k + 1)
            a, b = x.t(), x  # Xᵀ X
        else:  # (n, C, S): each channel's positions are contiguous runs -> buffer (K+1, n, S)
            src = data.transpose(0, 1)  # (C, n, S), a view
            src = src if index is None else src[index]
            k, n, s = src.shape
            rows = self._rows_buffer((k + 1, n, s), work, src.device, channels_last)  # last row ones
            dst = rows[:k]
            x = rows.view(k + 1, n * s)
            a, b = x, x.t()  # X Xᵀ
        ref = self._ref_work if channels_last else self._ref_work[:, None, None]
        torch.sub(src, ref, out=dst)
        gram = torch.mm(a, b, out=self._gram.get((k + 1, k + 1), work, x.device))
        self._add_gram(gram, n * s)
        if index is None and self._rows[1] is rows:  # an owned buffer: keep the views for the next batch
            self._plan = ((data.shape, data.dtype, channels_last), dst, a, b, gram, n * s, ref)

    def _rows_buffer(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                     channels_last: bool) -> torch.Tensor:
        """``[n, S, K+1]`` (channels last) or ``[K+1, n, S]`` in ``dtype``, its last column (row) 1: kept
        when small, else from the shared workspace (whose ones are written again each time)."""
        key = (shape, dtype, device)
        if self._rows[0] == key:
            return self._rows[1]
        if math.prod(shape) > SMALL:
            buf = workspace(torch.empty((), dtype=dtype, device=device).expand(shape))
            (buf[:, :, -1] if channels_last else buf[-1]).fill_(1.0)
            return buf
        with torch.inference_mode(False):  # a normal tensor: written in place outside inference mode too
            buf = torch.empty(shape, dtype=dtype, device=device)
            (buf[:, :, -1] if channels_last else buf[-1]).fill_(1.0)
        self._rows = (key, buf)
        return buf

    def _add_gram(self, gram: torch.Tensor, n: int) -> None:
        """Add one batch's ``[[G_b, s_b], [s_bᵀ, n_b]]`` (about ``r``, in the working precision)."""
        self._sums += gram
        self.count += n

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
        if other._sums is None or other.count == 0:
            return
        if self._sums is None:
            self._set_moments(other.count, other.mean, other.comoment)
            return
        # Chan et al. (module docstring) on (n, μ, M); the reference moves to the merged mean
        n_a, mean_a, m_a = self.count, self.mean, self.comoment
        dev = mean_a.device
        n_b, mean_b, m_b = other.count, other.mean.to(dev), other.comoment.to(dev)
        total = n_a + n_b
        delta = mean_b - mean_a
        self._set_moments(total, mean_a + delta * (n_b / total),
                          (m_a + m_b).addr_(delta, delta, alpha=n_a * n_b / total))

    def covariance(self) -> torch.Tensor:
        """Population covariance ``M / n`` of the tracked channels (float64 ``[K, K]``)."""
        comoment = self.comoment
        return None if comoment is None else comoment / max(self.count, 1)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"max_channels": self.max_channels, "covariance_samples": self.max_samples,
                                 "channels": self.channels, "count": self.count, "dropped": self.dropped}
        if self.index is not None:
            state["index"] = self.index.to("cpu", copy=True)
        if self._sums is not None:
            state.update(mean=self.mean.detach().to("cpu", copy=True),
                         comoment=self.comoment.detach().to("cpu", copy=True))
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
            acc._set_moments(acc.count, torch.as_tensor(state["mean"], dtype=torch.float64),
                             torch.as_tensor(state["comoment"], dtype=torch.float64))
        return acc
