"""Neuron coverage hit sets: NC, TKNC, and (given per-neuron ranges) KMNC, NBC and SNAC.

A neuron is a channel: its value for one input is the channel's mean over positions
(``ChannelStats.sample_mean``, ``[N, C]``), as in the reference implementations of DeepXplore and
DeepGauge for convolutional layers; for ``[N, C]`` (dense) layers it is the unit's output itself.

Definitions (φ(x, n) is the value of neuron n for input x):

- NC, Pei et al., "DeepXplore", SOSP 2017, §4.1: scale the layer's neuron values of each input
  min–max over the layer's neurons, ``(φ − min_n φ) / (max_n φ − min_n φ)``; n is covered at τ if
  its scaled value is > τ for some input. An input whose neurons are all equal covers nothing
  (the reference's 0/0 is NaN, and NaN > τ is false).
- TKNC, Ma et al., "DeepGauge", ASE 2018, §3.2: n is covered if it is among the top-k neurons of its
  layer for some input. Ties are inclusive: a neuron equal to the k-th largest value counts, so an
  input may cover more than k neurons.
- KMNC / NBC / SNAC, DeepGauge §3.1, from per-neuron ranges ``[low_n, high_n]`` of a profiling pass:
  section i of n is ``[low + i·(high − low)/k, low + (i+1)·(high − low)/k)``, the last one closed
  (a value equal to ``high`` hits it); values outside ``[low, high]`` hit no section. A lower corner
  is hit by φ < low, an upper corner by φ > high (SNAC counts upper corners only).

Conventions: non-finite sample means (a sample whose channel had no finite value) are skipped and
counted in ``skipped``. A neuron with ``low == high`` has no sections to tell apart: it records no
KMNC hit (the analysis leaves it out of the KMNC denominator) but its corners work as usual. A neuron
whose range is not finite or has ``low > high`` (never observed while profiling) records nothing.

Every hit set merges by OR and the observed ranges by min/max, so ``merge`` is exact.

State on CPU is updated in place by the native kernel when ``layerscope._C`` is built
(``kernels.state_kernels``; the same hit sets, counts and ranges as the torch code here, which runs
otherwise: on CUDA, or without a compiler).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from typing_extensions import Self

from ..capture.layout import LayoutView
from ..kernels import ChannelStats, state_kernels
from ._protocol import ACCUMULATORS

DEFAULT_COVERAGE_THRESHOLDS = (0.0, 0.25, 0.5, 0.75)
DEFAULT_TOP_K = 2
DEFAULT_KMNC_SECTIONS = 100

RangeLike = tuple[Sequence[float | None] | torch.Tensor, Sequence[float | None] | torch.Tensor]


def _as_range_tensor(values: Sequence[float | None] | torch.Tensor) -> torch.Tensor:
    """A float64 CPU tensor; ``None`` (how JSON stores a non-finite bound) becomes NaN."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).reshape(-1).contiguous()
    return torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float64)


def scaled_neuron_values(values: torch.Tensor) -> torch.Tensor:
    """DeepXplore's per-input min–max scaling over the layer's neurons: ``[N, C] -> [N, C]``.

    NaN inputs stay NaN and are ignored by min/max; an input with a zero range scales to NaN.
    """
    inf = float("inf")  # a Python scalar: no tensor (and no host-to-device copy) per call
    nan = torch.isnan(values)
    lo = torch.where(nan, inf, values).amin(dim=1, keepdim=True)  # [N, 1]
    hi = torch.where(nan, -inf, values).amax(dim=1, keepdim=True)  # [N, 1]
    span = hi - lo
    return torch.where(span > 0, (values - lo) / span, torch.nan)


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """``[N, C] -> [N, C]`` bool: neurons ≥ the k-th largest finite value of their input (ties kept)."""
    nan = torch.isnan(values)
    filled = torch.where(nan, float("-inf"), values)
    kth = filled.topk(min(k, filled.shape[1]), dim=1).values[:, -1:]  # [N, 1]
    return (filled >= kth) & ~nan


def kmnc_section(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, k: int) -> torch.Tensor:
    """Section index of each value, ``[N, C] -> [N, C]`` int64; −1 where the value hits no section.

    ``i = floor((φ − low) · k / (high − low))``, clamped to k − 1 so that φ == high is in the last one.
    """
    span = high - low
    inside = (values >= low) & (values <= high) & (span > 0)
    idx = torch.floor((values - low) * k / torch.where(span > 0, span, 1.0))
    idx = idx.clamp(0, k - 1).to(torch.int64)
    return torch.where(inside, idx, -1)


@ACCUMULATORS.register("coverage")
class NeuronCoverage:
    """Streaming neuron-coverage hit sets of one layer (see the module docstring for definitions).

    State (``C`` neurons, ``T`` thresholds, ``k`` sections), on the activation's device:
    ``nc_hits`` bool [T, C], ``topk_hits`` bool [C], ``low``/``high`` float64 [C] (observed range of
    each neuron: the profile for a later run), ``skipped`` int64 [C], ``samples`` int; with ``ranges``
    also ``kmnc_hits`` bool [C, k], ``lower_hits``/``upper_hits`` bool [C].
    """

    _TENSORS = ("nc_hits", "topk_hits", "low", "high", "skipped")
    _RANGE_TENSORS = ("kmnc_hits", "lower_hits", "upper_hits")
    # dtypes of the state tensors other than bool
    _DTYPES: ClassVar[dict[str, torch.dtype]] = {"low": torch.float64, "high": torch.float64, "skipped": torch.int64}

    def __init__(
        self,
        coverage_thresholds: Sequence[float] = DEFAULT_COVERAGE_THRESHOLDS,
        top_k: int = DEFAULT_TOP_K,
        kmnc_sections: int = DEFAULT_KMNC_SECTIONS,
        ranges: RangeLike | None = None,
        backend: str | None = None,
        **_: Any,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"coverage top_k must be ≥ 1, got {top_k}")
        if kmnc_sections < 1:
            raise ValueError(f"coverage kmnc_sections must be ≥ 1, got {kmnc_sections}")
        self.coverage_thresholds = tuple(float(t) for t in coverage_thresholds)
        self._taus = np.asarray(self.coverage_thresholds, dtype=np.float64).reshape(-1)  # [T], native path
        self._taus_tensor: torch.Tensor | None = None  # the same on the state's device, torch path
        self.top_k = int(top_k)
        self.kmnc_sections = int(kmnc_sections)
        self.ranges = self._parse_ranges(ranges)
        self.backend = backend  # a forced kernel backend: "torch" runs the torch code below on CPU too
        self.samples = 0
        self.nc_hits: torch.Tensor | None = None  # every state tensor is None until the first update
        self._np_cache: tuple[Any, ...] | None = None  # see _native_update

    @staticmethod
    def _parse_ranges(ranges: RangeLike | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if ranges is None:
            return None
        low, high = (_as_range_tensor(r) for r in ranges)
        if low.shape != high.shape:
            raise ValueError(f"coverage ranges: low has {low.numel()} values but high has {high.numel()}")
        return low, high

    @property
    def has_ranges(self) -> bool:
        return self.ranges is not None

    @property
    def num_neurons(self) -> int:
        return 0 if self.nc_hits is None else int(self.nc_hits.shape[1])

    # -- streaming -------------------------------------------------------------------------------
    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        arrays = getattr(reduced, "arrays", None)  # NumPy arrays of a native reduction
        # [N, C]: once the state exists, a native reduction's NumPy array (no tensor wrapper), else the tensor
        values = arrays[9] if arrays is not None and self.nc_hits is not None else reduced.sample_mean
        if self.nc_hits is None:
            self._init_state(values.shape[1], values.device)
        elif values.shape[1] != self.num_neurons:
            raise ValueError(
                f"coverage: neuron count changed from {self.num_neurons} to {values.shape[1]}: a layer's "
                "outputs must keep the same number of channels (set its layout explicitly)"
            )
        if values.shape[0] == 0:  # an empty batch covers nothing (and torch's amin refuses it)
            return
        native, state, ranges = self._native_update()
        if native is not None and (arrays is not None or values.is_cpu):
            # the reduction's NumPy array when it made one (no tensor round trip), and the state's views
            native(values if arrays is None else arrays[9], self._taus, self.top_k, state, ranges)
            self.samples += values.shape[0]
            return
        values = reduced.sample_mean.to(torch.float64)  # the torch code: CUDA state, or a forced backend
        self._absorb(self._batch_state(torch.where(torch.isfinite(values), values, torch.nan)))

    def __getstate__(self) -> dict[str, Any]:
        """For copy and pickle: without the cached NumPy views (a copy's would not view its tensors)."""
        return {**self.__dict__, "_np_cache": None}

    def _native_update(self) -> tuple[Any, tuple[np.ndarray, ...] | None, tuple[np.ndarray, ...] | None]:
        """The native in-place update for the state (None: the torch code runs) and NumPy views of the CPU
        state and range state; looked up again only when a state tensor was replaced, not per update."""
        tensors = (self.nc_hits, self.topk_hits, self.low, self.high, self.skipped)
        if self.ranges is not None:
            tensors += (*self.ranges, self.kmnc_hits, self.lower_hits, self.upper_hits)
        cache = self._np_cache
        if cache is None or len(cache[0]) != len(tensors) or not all(map(operator.is_, cache[0], tensors)):
            native = state_kernels(self.nc_hits.device, self.backend)
            if native is None or not self.nc_hits.is_cpu:
                cache = (tensors, None, None, None)
            else:
                arrays = tuple(t.numpy() for t in tensors)
                cache = (tensors, native.coverage_update, arrays[:5], arrays[5:] or None)
            self._np_cache = cache
        return cache[1], cache[2], cache[3]

    def _init_state(self, c: int, device: torch.device) -> None:
        if self.ranges is not None and self.ranges[0].numel() != c:
            raise ValueError(
                f"coverage ranges have {self.ranges[0].numel()} neurons but the layer has {c}: "
                "use the profile of the same layer (and the same layout) as reference"
            )
        t, k = len(self.coverage_thresholds), self.kmnc_sections
        self.nc_hits = torch.zeros((t, c), dtype=torch.bool, device=device)
        self.topk_hits = torch.zeros(c, dtype=torch.bool, device=device)
        self.low = torch.full((c,), float("inf"), dtype=torch.float64, device=device)
        self.high = torch.full((c,), float("-inf"), dtype=torch.float64, device=device)
        self.skipped = torch.zeros(c, dtype=torch.int64, device=device)
        if self.ranges is not None:
            self.ranges = (self.ranges[0].to(device), self.ranges[1].to(device))
            self.kmnc_hits = torch.zeros((c, k), dtype=torch.bool, device=device)
            self.lower_hits = torch.zeros(c, dtype=torch.bool, device=device)
            self.upper_hits = torch.zeros(c, dtype=torch.bool, device=device)

    def _batch_state(self, values: torch.Tensor) -> dict[str, Any]:
        """The state of one batch alone (``values`` [N, C] float64, NaN = skipped)."""
        nan = torch.isnan(values)
        inf = float("inf")
        taus = self._taus_on(values.device)  # [T]
        scaled = scaled_neuron_values(values)  # [N, C]
        part: dict[str, Any] = {
            "samples": values.shape[0],
            "nc_hits": (scaled.unsqueeze(0) > taus.view(-1, 1, 1)).any(dim=1),  # [T, N, C] -> [T, C]
            "topk_hits": top_k_mask(values, self.top_k).any(dim=0),
            "low": torch.where(nan, inf, values).amin(dim=0),
            "high": torch.where(nan, -inf, values).amax(dim=0),
            "skipped": nan.sum(dim=0),
        }
        if self.ranges is not None:
            part.update(self._range_hits(values))
        return part

    def _taus_on(self, device: torch.device) -> torch.Tensor:
        """The thresholds as a float64 [T] tensor on ``device``, copied there once (not per update)."""
        if self._taus_tensor is None or self._taus_tensor.device != device:
            self._taus_tensor = torch.from_numpy(self._taus).to(device)
        return self._taus_tensor

    def _range_hits(self, values: torch.Tensor) -> dict[str, torch.Tensor]:
        low, high = self.ranges
        valid = torch.isfinite(low) & torch.isfinite(high) & (low <= high)  # [C]
        k = self.kmnc_sections
        section = kmnc_section(values, low, high, k)  # [N, C]
        hit = (section >= 0) & valid
        # Scatter hits into [C, k]: a count per section, so duplicate indices are summed, never raced.
        counts = torch.zeros((values.shape[1], k), dtype=torch.int32, device=values.device)
        counts.scatter_add_(1, section.clamp(min=0).T, hit.T.to(torch.int32))
        return {
            "kmnc_hits": counts > 0,
            "lower_hits": ((values < low) & valid).any(dim=0),
            "upper_hits": ((values > high) & valid).any(dim=0),
        }

    def _absorb(self, part: dict[str, Any]) -> None:
        self.samples += int(part["samples"])
        dev = self.nc_hits.device
        for f in ("nc_hits", "topk_hits", *(self._RANGE_TENSORS if self.ranges is not None else ())):
            setattr(self, f, getattr(self, f) | part[f].to(dev))
        self.low = torch.minimum(self.low, part["low"].to(dev))
        self.high = torch.maximum(self.high, part["high"].to(dev))
        self.skipped = self.skipped + part["skipped"].to(dev)

    # -- merging and state -----------------------------------------------------------------------
    def _options(self) -> tuple[Any, ...]:
        return (self.coverage_thresholds, self.top_k, self.kmnc_sections)

    def _same_ranges(self, other: NeuronCoverage) -> bool:
        if self.ranges is None or other.ranges is None:
            return self.ranges is None and other.ranges is None
        return all(
            a.shape == b.shape and torch.equal(a.cpu().nan_to_num(0.5), b.cpu().nan_to_num(0.5))
            and torch.equal(a.cpu().isnan(), b.cpu().isnan())
            for a, b in zip(self.ranges, other.ranges, strict=True)
        )

    def merge(self, other: Self) -> None:
        if other._options() != self._options() or not self._same_ranges(other):
            raise ValueError(
                "cannot merge coverage accumulators built with different options "
                f"{other._options()} vs {self._options()} (or different reference ranges)"
            )
        if other.nc_hits is None:
            return
        if self.nc_hits is None:
            self._init_state(other.num_neurons, other.nc_hits.device)
        elif other.num_neurons != self.num_neurons:
            raise ValueError(f"cannot merge coverage of {other.num_neurons} neurons into {self.num_neurons}")
        fields = (*self._TENSORS, *(self._RANGE_TENSORS if self.ranges is not None else ()))
        self._absorb({"samples": other.samples, **{f: getattr(other, f) for f in fields}})

    def observed_ranges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-neuron ``(low, high)`` seen so far: pass it as ``ranges=`` to a later measuring run."""
        if self.nc_hits is None:
            raise ValueError("coverage has seen no data: run a profiling pass before asking for ranges")
        return self.low.clone(), self.high.clone()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "coverage_thresholds": list(self.coverage_thresholds),
            "top_k": self.top_k,
            "kmnc_sections": self.kmnc_sections,
            "samples": self.samples,
            "ranges": None if self.ranges is None else [r.detach().to("cpu", copy=True) for r in self.ranges],
        }
        if self.nc_hits is not None:
            fields = (*self._TENSORS, *(self._RANGE_TENSORS if self.ranges is not None else ()))
            # copies: the state is updated in place on CPU, a snapshot must not follow it
            state.update({f: getattr(self, f).detach().to("cpu", copy=True) for f in fields})
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        acc = cls(
            coverage_thresholds=state["coverage_thresholds"],
            top_k=state["top_k"],
            kmnc_sections=state["kmnc_sections"],
            ranges=state.get("ranges"),
        )
        acc.samples = int(state.get("samples", 0))
        if "nc_hits" in state:
            fields = (*cls._TENSORS, *(cls._RANGE_TENSORS if acc.ranges is not None else ()))
            for f in fields:  # own, contiguous copies in the state's dtypes (updated in place later)
                dtype = cls._DTYPES.get(f, torch.bool)
                setattr(acc, f, torch.as_tensor(state[f]).to(dtype).clone(memory_format=torch.contiguous_format))
        return acc
