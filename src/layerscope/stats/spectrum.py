"""Streaming power spectra per channel, with bounded state and exact merge.

**Welch PSD** (views with ``axis == "time"``: ``[B, T, C]`` Linear/attention outputs, ``[B, C, L]``
Conv1d) — the estimator of ``scipy.signal.welch`` with its defaults (Welch 1967, "The use of fast
Fourier transform for the estimation of power spectra", IEEE Trans. Audio Electroacoust. 15(2)):

- segment length ``L = min(nperseg, T₀)``, ``T₀`` the time length of the first batch (scipy clips
  ``nperseg`` to the signal length the same way); hop ``L − L//2`` (``noverlap = L//2``); a tail
  shorter than a segment is dropped (``boundary=None, padded=False``). A later batch shorter than
  ``L`` is skipped and counted in ``skipped``. Time layouts of rank > 1 (``[N, C, A, T]``) use the
  last position axis as time and fold the others into the samples.
- per segment: subtract its mean (``detrend='constant'``), multiply by the periodic Hann window
  ``w`` (``scipy.signal.get_window('hann', L)``), ``X = rfft(·)`` (``nfft = L``);
- state: ``P[c, k] = Σ |X_k|²`` over every segment of every sample and ``segments[c]``;
- PSD (one-sided density): ``S_k = s_k · P_k / (segments · fs · Σw²)`` with ``s_k = 2`` except at
  DC and (even ``L``) Nyquist, at ``f_k = k · fs / L``.

Sums merge exactly, and ``S`` equals the mean over samples of ``scipy.signal.welch(x, fs,
nperseg=L)`` along the time axis.

**Samples per batch** (option ``spectrum_samples``, default 8): the spectra are estimated from at
most that many samples of each batch, evenly spaced (``x[::⌈N/8⌉]``, a view), so that their cost
stays a fraction of the forward pass; every batch still contributes, and the estimator is Welch's
over the samples used. ``spectrum_samples=None`` uses every sample (then ``S`` is the mean of
``scipy.signal.welch`` over all of them). Counts, extremes and the stream spectrum use all samples.

**Radial 2-D spectrum** (views with ``axis == "space"`` and ``spatial_shape == (H, W)``): per sample
and channel the mean is removed and ``P(k_y, k_x) = |FFT2(x)|² / (H·W)`` (so ``Σ P / (H·W)`` is the
spatial variance, Parseval). Radial frequency ``r = √(f_y² + f_x²)`` with ``f_y = k_y/H`` and
``f_x = k_x/W`` (``numpy.fft.fftfreq``, cycles per pixel); ring width ``Δ = 1/min(H, W)``; a frequency
belongs to ring ``j = ⌊r/Δ + ½⌋``, ``j = 0 … J``, ``J = min(H, W)//2``, so ring ``j`` is
``[(j − ½)Δ, (j + ½)Δ)`` (a frequency on a border belongs to the outer ring); the corners with
``r ≥ (J + ½)Δ`` (beyond the Nyquist radius of the shorter side) are left out. The radially
averaged spectrum is ``S_j = R[c, j] / (n_j · samples)`` with ``R`` the sum of ``P`` over the ring
and the samples, ``n_j`` the ring's size, at ``f_j = j·Δ·fs`` (``fs`` only scales the frequency axis).

**Stream spectrum** (option ``stream_spectrum=True``, any view): each channel's per-batch mean is
one time step; a ring buffer of the last ``stream_nperseg`` steps emits a Welch segment (same
detrend, window and scaling) every hop, so the result equals ``scipy.signal.welch`` of the sequence of
batch means. ``merge`` adds the other stream's finished segments (each rank's stream is its own time
series) and keeps this accumulator's ring buffer.

Besides the spectra the accumulator keeps, from the shared channel reduction and at no extra read,
each channel's count, min, max and the counts above each threshold — what the operational-state
rules need for ``dead`` (max == min) and ``saturated`` (values within 2 % of a bounded range).

**Cost per batch.** The Welch sums are kept as ``Σ (Re X)²`` and ``Σ (Im X)²`` (``[C, F, 2]``, added
when read: one kernel fewer per batch). On the CPU, with the native extension built, an all-finite
float32/float64 batch with a power-of-two ``L`` is folded in by one native call (csrc/welch.cpp:
detrend, window, radix-2 real FFT vectorised across segments, squares added in float64), and the
counts, extremes, threshold counts and segments by another (csrc/accumulate.cpp), instead of about a
dozen torch kernels; the torch code (:mod:`._periodogram`) is the reference, serves every other case,
and is forced with the option ``backend="torch"``. From the second batch of a shape on, both calls run
from a per-layer plan (their ctypes arguments fixed for that shape, strides and dtype; the samples used,
``x[::step]``, start where the batch does, so no view is made), and the batch's finiteness comes from
the reduction's NaN/Inf counts (its NumPy arrays, or one native call): no torch op per batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from typing_extensions import Self

from ..capture.layout import Axis, LayoutView
from ..kernels import ChannelStats
from ..kernels._native_accumulate import (
    all_finite_native,
    fold_native,
    fold_plan,
    fold_reduction_native,
    welch_parts_native,
    welch_plan,
)
from ._periodogram import (
    hann_window,
    onesided_scale,
    radial_bins,
    radial_power_sum,
    welch_power_parts,
    welch_power_sum,
)
from ._planned import Planned, batch_key
from ._protocol import ACCUMULATORS
from ._sampling import DEFAULT_SAMPLES, check_samples, sample_step
from ._scratch import Scratch

DEFAULT_NPERSEG = 64
DEFAULT_STREAM_NPERSEG = 32
MIN_LENGTH = 8  # a time axis shorter than this, or an image side shorter than 4, gets no spectrum
MIN_SIDE = 4

_TENSORS = ("power", "segments", "count", "min", "max", "above")
_OPTIONS = ("nperseg", "fs", "stream_spectrum", "stream_nperseg", "spectrum_samples", "thresholds", "bands",
            "spectrum_top_k", "slope_range", "state_rules")
_MERGE_KEYS = ("kind", "length", "spatial_shape", "fs", "thresholds", "stream", "stream_nperseg",
               "max_samples")
_STREAM_TENSORS = ("stream_buffer", "stream_power")


@ACCUMULATORS.register("spectrum")
class ChannelSpectrum(Planned):
    """Streaming per-channel power spectrum (Welch over time, radial over H×W, optional stream)."""

    def __init__(
        self,
        nperseg: int = DEFAULT_NPERSEG,
        fs: float = 1.0,
        stream_spectrum: bool = False,
        stream_nperseg: int = DEFAULT_STREAM_NPERSEG,
        spectrum_samples: int | None = DEFAULT_SAMPLES,
        thresholds: Sequence[float] = (),
        bands: Any = None,
        spectrum_top_k: int = 8,
        slope_range: Sequence[float] | None = None,
        state_rules: dict[str, Any] | None = None,
        backend: str | None = None,
        **_: Any,
    ) -> None:
        if int(nperseg) < 2 or int(stream_nperseg) < 2:
            raise ValueError(f"nperseg and stream_nperseg must be at least 2 (got {nperseg}, "
                             f"{stream_nperseg})")
        if not fs > 0:
            raise ValueError(f"fs must be positive (got {fs})")
        self.nperseg, self.fs = int(nperseg), float(fs)
        self.stream, self.stream_nperseg = bool(stream_spectrum), int(stream_nperseg)
        self.max_samples = check_samples("spectrum_samples", spectrum_samples)  # see the module docstring
        self.thresholds = tuple(float(t) for t in thresholds)
        # analysis options, carried to analysis.temporal (the Probe passes options only to accumulators)
        self.bands, self.top_k = bands, int(spectrum_top_k)
        self.slope_range = tuple(slope_range) if slope_range is not None else None
        self.state_rules = dict(state_rules or {})
        self.kind: str | None = None  # "welch", "radial" or "none" once the first batch is seen
        self.length = 0  # Welch segment length L, or 0
        self.spatial_shape: tuple[int, ...] = ()
        self.skipped = 0
        # every tensor is None until the first update
        # (C, F, P) float64: the power (C, F) — Σ|X|² (Welch) or ring sums (radial) — kept as P parts that
        # add up to it: Σ(Re X)² and Σ(Im X)² for Welch (P = 2), the power itself otherwise (P = 1)
        self._parts: torch.Tensor | None = None
        self.segments: torch.Tensor | None = None  # (C,) int64 segments (Welch) or samples (radial)
        self.count: torch.Tensor | None = None  # (C,) int64 finite values seen
        self.min: torch.Tensor | None = None  # (C,) float64
        self.max: torch.Tensor | None = None  # (C,) float64
        self.above: torch.Tensor | None = None  # (T, C) int64 values > thresholds[t]
        self.stream_steps = 0
        self.stream_segments = 0
        self.stream_buffer: torch.Tensor | None = None
        self.stream_power: torch.Tensor | None = None
        self._window: torch.Tensor | None = None
        self._bins: torch.Tensor | None = None
        self._scratch = Scratch()
        # the Welch sums of all-finite CPU batches go through one native call (csrc/welch.cpp) unless the
        # torch kernels are forced; the torch code is the reference and serves every other case
        self._native = backend != "torch"
        # the steady-state plan of that path for one batch shape (see _plan_fast): None, or (batch key,
        # state tensors it writes, Welch call, Welch arguments, fold plan, segments per channel)
        self._fast: tuple[Any, ...] | None = None


    @property
    def power(self) -> torch.Tensor | None:
        """``(C, F)`` float64: Σ|X|² over the segments (Welch) or the ring sums (radial); None before data."""
        return None if self._parts is None else self._parts.sum(-1)

    @power.setter
    def power(self, value: torch.Tensor | None) -> None:
        if value is None:
            self._parts = None
            return
        value = torch.as_tensor(value, dtype=torch.float64)
        parts = torch.zeros(*value.shape, 2 if self.kind == "welch" else 1, dtype=torch.float64, device=value.device)
        parts[..., 0] = value
        self._parts = parts

    # -- update --------------------------------------------------------------------------------
    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        fast = self._planned(view)  # the usual batch: two native calls and no torch op (see _plan_fast)
        if (fast is not None and (fast[2] is None or all_finite_native(reduced))
                and fold_native(fast[4], reduced, fast[5])):
            if fast[2] is not None:  # the Welch sums, after the fold: nothing else can fail
                fast[2](view.data.data_ptr(), *fast[3])
            if self.stream:
                self._stream_step(reduced.mean)
            return
        self._update_general(view, reduced)
        if self._native and self.kind in ("welch", "none"):  # plan again after a batch that did not fit
            self._replan(view)

    def _holds(self, fast: tuple[Any, ...]) -> bool:
        state = fast[1]
        return (state[0] is self._parts and state[1] is self.count and state[2] is self.min
                and state[3] is self.max and state[4] is self.above and state[5] is self.segments)

    def _plan_fast(self, view: LayoutView) -> tuple[Any, ...] | None:
        """The steady-state path of a Welch layer (or of one without a spectrum: the fold alone) with the
        native kernels, for batches like ``view.data``:
        the fixed arguments of the Welch call on the samples used (``x[::step]`` starts where ``x`` does,
        so a batch needs no view) and of the fold of the reduction, with the state tensors they write
        (checked by identity on each batch: a merge or a restored state replaces them). A batch takes it
        when it has the same shape, strides, dtype and layout and is all finite; every other batch (and
        time layouts of rank > 1) takes the general path. None when it cannot run."""
        data = view.data
        state = (self._parts, self.count, self.min, self.max, self.above, self.segments)
        key = batch_key(view)
        fold = fold_plan(state[1:5], self.segments)
        if fold is None or data.device.type != "cpu":
            return None
        if self.kind == "none":  # no spectrum: the fold alone, whatever the values
            return key, state, None, (), fold, 0
        if len(view.spatial_shape) != 1 or data.dtype not in (torch.float32, torch.float64):
            return None
        step = sample_step(data.shape[0], self.max_samples)
        welch = welch_plan(data, step, self.length, self._window_for(data), view.channels_last, self._parts)
        if welch is None:
            return None
        n, t = -(-data.shape[0] // step), data.shape[1 if view.channels_last else 2]
        hop = self.length - self.length // 2
        return key, state, *welch, fold, n * ((t - self.length) // hop + 1)

    def _update_general(self, view: LayoutView, reduced: ChannelStats) -> None:
        if self.kind is None:
            self._start(view, reduced)
        if reduced.count.shape[0] != self._parts.shape[0]:
            raise ValueError(
                f"channel count changed from {self._parts.shape[0]} to {reduced.count.shape[0]}: a layer's "
                "outputs must keep the same number of channels (set its layout explicitly)"
            )
        # False also when rare: a NaN or ±Inf somewhere in the batch (no spectrum: no need to know)
        finite = self.kind != "none" and (all_finite_native(reduced) if self._native else reduced.all_finite())
        segments = 0  # Welch segments per channel that the native Welch call left for the fold to count
        if self.kind == "welch":
            segments = self._update_welch(view, reduced, finite)
        elif self.kind == "radial":
            self._update_radial(view, reduced, finite)
        self._absorb_reduction(reduced, segments)
        if self.stream:
            self._stream_step(reduced.mean)

    def _start(self, view: LayoutView, reduced: ChannelStats) -> None:
        c, dev = view.num_channels, reduced.count.device
        shape = view.spatial_shape
        if view.axis == Axis.TIME and shape and shape[-1] >= MIN_LENGTH:
            self.kind, self.length = "welch", min(self.nperseg, shape[-1])
            n_bins = self.length // 2 + 1
        elif view.axis == Axis.SPACE and len(shape) == 2 and min(shape) >= MIN_SIDE:
            self.kind, self.spatial_shape = "radial", tuple(shape)
            n_bins = min(shape) // 2 + 1
        else:
            self.kind, n_bins = "none", 0
        self._parts = torch.zeros(c, n_bins, 2 if self.kind == "welch" else 1, dtype=torch.float64, device=dev)
        self.segments = torch.zeros(c, dtype=torch.int64, device=dev)
        self.count = torch.zeros(c, dtype=torch.int64, device=dev)
        self.min = torch.full((c,), math.inf, dtype=torch.float64, device=dev)
        self.max = torch.full((c,), -math.inf, dtype=torch.float64, device=dev)
        self.above = torch.zeros(len(self.thresholds), c, dtype=torch.int64, device=dev)
        if self.stream:
            self.stream_buffer = torch.zeros(c, self.stream_nperseg, dtype=torch.float64, device=dev)
            self.stream_power = torch.zeros(c, self.stream_nperseg // 2 + 1, dtype=torch.float64, device=dev)

    def _absorb_reduction(self, reduced: ChannelStats, segments: int = 0) -> None:
        """Counts, extremes and threshold counts of the batch, and ``segments`` more for every channel: one
        native call on the CPU, else four or five kernels."""
        if self._native and fold_reduction_native(
            (self.count, self.min, self.max, self.above), (reduced.count, reduced.min, reduced.max, reduced.above),
            self.segments if segments else None, segments,
        ):
            return
        if segments:
            self.segments += segments
        self.count += reduced.count
        torch.minimum(self.min, reduced.min, out=self.min)
        torch.maximum(self.max, reduced.max, out=self.max)
        if reduced.above.shape[0] == self.above.shape[0]:
            self.above += reduced.above

    def _add_power(self, parts: torch.Tensor, n_seg: int, reduced: ChannelStats, finite: bool) -> None:
        """Add one batch's sums (``(C, F, P)``, like ``_parts``); a channel with a NaN or ±Inf in this
        batch adds nothing."""
        if finite:
            self._parts += parts
            self.segments += n_seg
            return
        ok = (reduced.nan + reduced.inf) == 0  # (C,)
        self._parts += torch.where(ok[:, None, None], parts, 0.0)
        self.segments += ok.to(torch.int64) * n_seg

    def _subsample(self, x: torch.Tensor) -> torch.Tensor:
        """At most ``max_samples`` samples, evenly spaced through the batch (a view: ``x[::step]``)."""
        step = sample_step(x.shape[0], self.max_samples)
        return x[::step] if step > 1 else x

    def _update_welch(self, view: LayoutView, reduced: ChannelStats, finite: bool) -> int:
        """Add the batch's Welch sums; returns the segments per channel still to be counted (the native
        path leaves them to :meth:`_absorb_reduction`), else 0."""
        if len(view.spatial_shape) == 1:
            x, channels_last = self._subsample(view.data), view.channels_last  # (N, C, T) or (N, T, C)
        else:
            x, channels_last = _fold_time(self._subsample(view.data), view), False  # (N·A…, C, T)
        if x.shape[1 if channels_last else 2] < self.length:
            self.skipped += view.num_samples
            return 0
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        window = self._window_for(x)
        if finite and self._native and welch_parts_native(x, self.length, window, channels_last, self._parts):
            hop = self.length - self.length // 2  # the native kernel added the parts in place
            return x.shape[0] * ((x.shape[1 if channels_last else 2] - self.length) // hop + 1)
        parts, n_seg = welch_power_parts(x, self.length, window, channels_last, self._scratch)
        self._add_power(parts, n_seg, reduced, finite)
        return 0

    def _window_for(self, x: torch.Tensor) -> torch.Tensor:
        """The Hann window in ``x``'s dtype and on its device (cached)."""
        if self._window is None or self._window.dtype != x.dtype or self._window.device != x.device:
            self._window = hann_window(self.length, x.dtype, x.device)
        return self._window

    def _update_radial(self, view: LayoutView, reduced: ChannelStats, finite: bool) -> None:
        if tuple(view.spatial_shape) != self.spatial_shape:
            raise ValueError(
                f"image size changed from {self.spatial_shape} to {tuple(view.spatial_shape)}: the radial "
                "spectrum needs one size per layer (resize the inputs or probe the layers separately)"
            )
        x = self._subsample(view.data)  # (n, C, S) or (n, S, C)
        x = (x.transpose(1, 2) if view.channels_last else x).reshape(x.shape[0], -1, *self.spatial_shape)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        if self._bins is None or self._bins.device != x.device:
            self._bins, _ = radial_bins(self.spatial_shape, x.device)
        self._add_power(radial_power_sum(x, self._bins)[:, :, None], x.shape[0], reduced, finite)

    def _stream_step(self, channel_mean: torch.Tensor) -> None:
        """Append one step (the batch's per-channel mean) and emit a Welch segment every hop."""
        length = self.stream_nperseg
        self.stream_buffer[:, self.stream_steps % length] = channel_mean  # both on the activations' device
        self.stream_steps += 1
        hop = length - length // 2
        if self.stream_steps >= length and (self.stream_steps - length) % hop == 0:
            start = self.stream_steps % length  # the oldest step in the ring
            seg = torch.roll(self.stream_buffer, -start, dims=1)[None]  # (1, C, L) in time order
            power, _ = welch_power_sum(seg, length, hann_window(length, device=seg.device))
            self.stream_power += power
            self.stream_segments += 1

    # -- results -------------------------------------------------------------------------------
    def frequencies(self) -> torch.Tensor:
        """Bin frequencies in units of ``fs`` (cycles per sample, or per pixel, times ``fs``)."""
        if self.kind == "welch":
            return torch.arange(self.length // 2 + 1, dtype=torch.float64) * self.fs / self.length
        if self.kind == "radial":
            return torch.arange(min(self.spatial_shape) // 2 + 1, dtype=torch.float64) * self.fs / min(
                self.spatial_shape
            )
        return torch.zeros(0, dtype=torch.float64)

    def psd(self) -> torch.Tensor:
        """``[C, F]`` float64 on the CPU: Welch density, or the radially averaged spectrum; NaN rows
        for channels without a segment."""
        if self.power is None or self.kind == "none":
            return torch.zeros(0, 0, dtype=torch.float64)
        power, seg = self.power.cpu(), self.segments.cpu().to(torch.float64)[:, None]
        if self.kind == "welch":
            return power * onesided_scale(self.length, self.fs) / seg
        _, ring_sizes = radial_bins(self.spatial_shape)
        return power / (ring_sizes * seg)

    def bin_weights(self) -> torch.Tensor:
        """Integration weight of each bin: ``Σ_k S_k · weight_k`` is the power in those bins —
        ``Δf = fs/L`` for Welch; the ring's share ``n_j/(H·W)`` of the plane for the radial spectrum
        (so the total is the variance inside the Nyquist disc)."""
        if self.kind == "welch":
            return torch.full((self.length // 2 + 1,), self.fs / self.length, dtype=torch.float64)
        if self.kind == "radial":
            _, ring_sizes = radial_bins(self.spatial_shape)
            return ring_sizes / math.prod(self.spatial_shape)
        return torch.zeros(0, dtype=torch.float64)

    def stream_psd(self) -> torch.Tensor:
        """``[C, stream_nperseg//2+1]`` Welch density of the per-batch channel means (NaN before the
        first full segment)."""
        if self.stream_power is None:
            return torch.zeros(0, 0, dtype=torch.float64)
        scale = onesided_scale(self.stream_nperseg, self.fs)
        return self.stream_power.cpu() * scale / self.stream_segments if self.stream_segments else (
            torch.full_like(self.stream_power.cpu(), math.nan))

    # -- merge and state -----------------------------------------------------------------------
    def merge(self, other: Self) -> None:
        if other._parts is None:
            return
        if self._parts is None:
            self._adopt(other)
            return
        self._check_compatible(other)
        dev = self._parts.device
        self._parts = self._parts + other._parts.to(dev)
        for f in ("segments", "count", "above"):
            setattr(self, f, getattr(self, f) + getattr(other, f).to(dev))
        self.min = torch.minimum(self.min, other.min.to(dev))
        self.max = torch.maximum(self.max, other.max.to(dev))
        self.skipped += other.skipped
        if self.stream and other.stream_power is not None:
            self.stream_power += other.stream_power.to(dev)
            self.stream_segments += other.stream_segments

    def _adopt(self, other: Self) -> None:
        """Take a copy of ``other``'s data (this accumulator has seen nothing yet)."""
        options = (self.nperseg, self.fs, self.thresholds, self.stream, self.stream_nperseg, self.max_samples)
        if options != (other.nperseg, other.fs, other.thresholds, other.stream, other.stream_nperseg,
                       other.max_samples):
            raise ValueError("cannot merge spectra gathered with different nperseg, fs, thresholds, stream "
                             "or spectrum_samples options")
        copy = other.from_state_dict(other.state_dict())
        for f in ("kind", "length", "spatial_shape", "skipped", "stream_steps", "stream_segments",
                  *_TENSORS, *(_STREAM_TENSORS if self.stream else ())):
            setattr(self, f, getattr(copy, f))
        self._parts = copy._parts

    def _check_compatible(self, other: Self) -> None:
        mine, theirs = ((*(getattr(a, f) for f in _MERGE_KEYS), a.power.shape) for a in (self, other))
        if mine != theirs:
            raise ValueError(
                f"cannot merge spectra with ({', '.join(_MERGE_KEYS)}, shape) = {theirs} into {mine}: "
                "use the same options and the same input sizes"
            )

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "nperseg": self.nperseg, "fs": self.fs, "stream_spectrum": self.stream,
            "spectrum_samples": self.max_samples,
            "stream_nperseg": self.stream_nperseg, "thresholds": list(self.thresholds),
            "bands": self.bands, "spectrum_top_k": self.top_k,
            "slope_range": list(self.slope_range) if self.slope_range else None,
            "state_rules": dict(self.state_rules),
        }
        if self._parts is not None:
            state.update({"kind": self.kind, "length": self.length, "spatial_shape": list(self.spatial_shape),
                          "skipped": self.skipped, "stream_steps": self.stream_steps,
                          "stream_segments": self.stream_segments})
            state.update({f: getattr(self, f).detach().to("cpu", copy=True) for f in _TENSORS})
            # the parts that add up to ``power``, so that a restored accumulator goes on bit for bit
            # (optional: a state without them restores from ``power``)
            state["power_parts"] = self._parts.detach().cpu().clone()
            if self.stream:
                state.update({f: getattr(self, f).detach().to("cpu", copy=True) for f in _STREAM_TENSORS})
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        acc = cls(**{k: state[k] for k in _OPTIONS})
        if "power" in state:
            acc.kind, acc.length = state["kind"], int(state["length"])
            acc.spatial_shape = tuple(int(s) for s in state["spatial_shape"])
            acc.skipped, acc.stream_steps = int(state["skipped"]), int(state["stream_steps"])
            acc.stream_segments = int(state["stream_segments"])
            for f in _TENSORS + (_STREAM_TENSORS if acc.stream else ()):
                setattr(acc, f, torch.as_tensor(state[f]).clone())
            if "power_parts" in state:
                acc._parts = torch.as_tensor(state["power_parts"], dtype=torch.float64).clone()
        return acc


def _fold_time(data: torch.Tensor, view: LayoutView) -> torch.Tensor:
    """``[N, C, A…, T]`` → ``[N·A…, C, T]``: the last position axis is time, the others are samples.

    ``data`` is (a subset of the samples of) ``view.data``.
    """
    x = data.transpose(1, 2) if view.channels_last else data  # (N, C, S)
    x = x.reshape(x.shape[0], view.num_channels, *view.spatial_shape)  # (N, C, A…, T)
    return x.movedim(1, -2).reshape(-1, view.num_channels, view.spatial_shape[-1])  # (N·A…, C, T)
