"""Neuron coverage from the hit sets of :class:`layerscope.stats.coverage.NeuronCoverage`.

Per layer and over the whole model, as fractions with their counts:

- NC(τ) = |covered neurons| / |N|                                      (Pei et al., DeepXplore, 2017)
- TKNC = |∪ₓ top-k neurons of x| / |N|                                  (Ma et al., DeepGauge, 2018)
- KMNC = Σₙ |sections of n hit| / (k·|N|)                               (DeepGauge, §3.1)
- NBC  = (|upper corners hit| + |lower corners hit|) / (2·|N|)          (DeepGauge, §3.1)
- SNAC = |upper corners hit| / |N|                                      (DeepGauge, §3.1)

For KMNC, |N| counts the neurons whose reference range is finite with ``low < high``; for NBC and
SNAC, those with a finite range ``low ≤ high``. The others (a neuron that was constant, or never
observed, during profiling) are reported as ``excluded_neurons``. The model-level figure pools the
counts of every layer, i.e. it is the fraction over all neurons of the network, as the papers define it
(layers weighted by their neurons).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..stats.coverage import NeuronCoverage
from . import LAYER_ANALYSES, MODEL_ANALYSES

CRITERIA = ("tknc", "kmnc", "nbc", "snac")


@dataclass(frozen=True)
class Criterion:
    """``covered`` out of ``total`` (neurons, or sections for KMNC, or corners for NBC)."""

    covered: int
    total: int
    excluded_neurons: int = 0

    @property
    def fraction(self) -> float:
        """covered / total; NaN when there is nothing to cover."""
        return self.covered / self.total if self.total else math.nan

    def __add__(self, other: Criterion) -> Criterion:
        return Criterion(self.covered + other.covered, self.total + other.total,
                         self.excluded_neurons + other.excluded_neurons)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}


@dataclass(frozen=True)
class CoverageResult:
    """Coverage of one layer, or of several pooled (``layers`` > 1). KMNC/NBC/SNAC need ranges."""

    neurons: int
    inputs: int
    nc: dict[float, Criterion]
    tknc: Criterion
    top_k: int
    kmnc_sections: int
    kmnc: Criterion | None = None
    nbc: Criterion | None = None
    snac: Criterion | None = None
    layers: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``nc`` keyed by ``f"{τ:g}"`` (``"0.25"``); every criterion a dict
        ``{covered, total, excluded_neurons, fraction}`` (fraction NaN when there is nothing to cover),
        None for a range criterion without reference ranges."""
        out: dict[str, Any] = {
            "neurons": self.neurons, "inputs": self.inputs, "layers": self.layers,
            "top_k": self.top_k, "kmnc_sections": self.kmnc_sections,
            "nc": {f"{t:g}": c.as_dict() for t, c in self.nc.items()},
        }
        for name in CRITERIA:
            crit = getattr(self, name)
            out[name] = None if crit is None else crit.as_dict()
        return {**out, **self.extra}


def _as_accumulator(cov: NeuronCoverage | Mapping[str, Any]) -> NeuronCoverage:
    return cov if isinstance(cov, NeuronCoverage) else NeuronCoverage.from_state_dict(dict(cov))


def _range_criteria(acc: NeuronCoverage) -> dict[str, Criterion]:
    low, high = (r.cpu() for r in acc.ranges)
    finite = torch.isfinite(low) & torch.isfinite(high)
    ordered = finite & (low <= high)  # NBC / SNAC neurons
    spread = finite & (low < high)  # KMNC neurons
    c, k = acc.num_neurons, acc.kmnc_sections
    upper, lower = acc.upper_hits.cpu() & ordered, acc.lower_hits.cpu() & ordered
    n_ord, n_spread = int(ordered.sum()), int(spread.sum())
    return {
        "kmnc": Criterion(int(acc.kmnc_hits.cpu()[spread].sum()), k * n_spread, c - n_spread),
        "nbc": Criterion(int(upper.sum() + lower.sum()), 2 * n_ord, c - n_ord),
        "snac": Criterion(int(upper.sum()), n_ord, c - n_ord),
    }


def layer_coverage(cov: NeuronCoverage | Mapping[str, Any]) -> CoverageResult:
    """Coverage criteria of one layer from its accumulator (or the accumulator's ``state_dict``)."""
    acc = _as_accumulator(cov)
    c = acc.num_neurons
    if acc.nc_hits is None:  # no data: nothing covered, nothing to cover
        nc = {t: Criterion(0, 0) for t in acc.coverage_thresholds}
        return CoverageResult(0, 0, nc, Criterion(0, 0), acc.top_k, acc.kmnc_sections)
    nc_hits = acc.nc_hits.cpu()
    nc = {t: Criterion(int(nc_hits[i].sum()), c) for i, t in enumerate(acc.coverage_thresholds)}
    ranged = _range_criteria(acc) if acc.has_ranges else {}
    return CoverageResult(
        neurons=c, inputs=acc.samples, nc=nc, tknc=Criterion(int(acc.topk_hits.sum()), c),
        top_k=acc.top_k, kmnc_sections=acc.kmnc_sections, **ranged,
    )


def _pool(values: Iterable[Criterion | None]) -> Criterion | None:
    present = [v for v in values if v is not None]
    return sum(present[1:], present[0]) if present else None


def model_coverage(layers: Mapping[str, CoverageResult] | Iterable[CoverageResult]) -> CoverageResult:
    """Coverage over all neurons of the selected layers: the counts of every layer pooled.

    A range criterion pools the layers that have reference ranges (``extra["layers_with_ranges"]``).
    """
    results = list(layers.values()) if isinstance(layers, Mapping) else list(layers)
    if not results:
        raise ValueError("model_coverage needs at least one layer's coverage")
    first = results[0]
    ranged_layers = [r for r in results if r.kmnc is not None]
    sections = {r.kmnc_sections for r in ranged_layers} or {first.kmnc_sections}
    if any((list(r.nc), r.top_k) != (list(first.nc), first.top_k) for r in results) or len(sections) > 1:
        raise ValueError("cannot pool coverage of layers measured with different thresholds, top-k or "
                         "KMNC sections: measure every layer with the same coverage options")
    ranged = {name: _pool(getattr(r, name) for r in results) for name in ("kmnc", "nbc", "snac")}
    return CoverageResult(
        neurons=sum(r.neurons for r in results),
        inputs=max(r.inputs for r in results),
        nc={t: _pool(r.nc[t] for r in results) for t in first.nc},
        tknc=_pool(r.tknc for r in results),
        top_k=first.top_k,
        kmnc_sections=sections.pop(),
        layers=len(results),
        extra={"layers_with_ranges": len(ranged_layers)},
        **ranged,
    )


def _from_dict(d: Mapping[str, Any]) -> CoverageResult:
    """Inverse of :meth:`CoverageResult.as_dict` (for results re-loaded from JSON)."""

    def crit(x: Mapping[str, Any] | None) -> Criterion | None:
        if x is None:
            return None
        return Criterion(int(x["covered"]), int(x["total"]), int(x["excluded_neurons"]))

    return CoverageResult(
        neurons=int(d["neurons"]), inputs=int(d["inputs"]),
        nc={float(t): crit(c) for t, c in d["nc"].items()}, tknc=crit(d["tknc"]),
        top_k=int(d["top_k"]), kmnc_sections=int(d["kmnc_sections"]),
        kmnc=crit(d.get("kmnc")), nbc=crit(d.get("nbc")), snac=crit(d.get("snac")),
        layers=int(d.get("layers", 1)),
    )


@LAYER_ANALYSES.register("coverage")
def summarize_coverage(acc: NeuronCoverage, meta: dict[str, Any]) -> dict[str, Any]:
    """Per-layer JSON: the criteria, plus the observed neuron ranges (a reference for a later run).

    ``neuron_low``/``neuron_high`` hold None for a neuron never observed (JSON has no ±inf).
    """
    out = layer_coverage(acc).as_dict()
    if acc.nc_hits is not None:
        low, high = acc.observed_ranges()
        out["neuron_low"] = [v if math.isfinite(v) else None for v in low.cpu().tolist()]
        out["neuron_high"] = [v if math.isfinite(v) else None for v in high.cpu().tolist()]
    return out


@MODEL_ANALYSES.register("coverage")
def pool_coverage(layers: Mapping[str, Any]) -> dict[str, Any]:
    """Model-level coverage from the per-layer results of :func:`summarize_coverage`."""
    per_layer = [
        _from_dict(r.stats["coverage"]) for r in layers.values()
        if r.stats.get("coverage") and r.stats["coverage"].get("neurons")
    ]
    return model_coverage(per_layer).as_dict() if per_layer else {}
