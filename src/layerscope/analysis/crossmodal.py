"""Cross-modal analysis: do a channel's (or a layer's) temporal features go with its spatial ones?

For each layer, the channels are the samples: a matrix ``T [n, p]`` of temporal features (from the
``spectrum`` analysis) and ``S [n, q]`` of spatial features (``spatial``, ``covariance``, ``impact``,
``connectivity``, ``moments``). Across layers, the layers are the samples and the features are the
layer-level summaries. For every pair (temporal i, spatial j), with
:mod:`layerscope.analysis.rank_correlation`:

- effect: Spearman's ρ (Pearson's r of the average ranks);
- p-value: permutation test, the rows of ``S`` permuted together (so the dependence *within* each set
  is kept and only the pairing is broken), ``p = (1 + #{|ρ_perm| ≥ |ρ_obs|}) / (B + 1)`` (Phipson &
  Smyth, 2010, "Permutation p-values should never be zero"); when ``n! ≤ B`` every permutation is
  enumerated instead and ``p = #{|ρ_π| ≥ |ρ_obs|} / n!`` (exact). Sample sets of the same size share
  one sample of random permutations, which a rank identity makes enough for every pair (see there);
- multiple testing: Benjamini & Hochberg (1995) step-up at ``q = 0.05`` over a *family*: all the
  channel-level tests of all layers form one family, the layer-level tests another. BH controls the
  FDR for independent or positively dependent tests (Benjamini & Yekutieli, 2001);
- confidence interval: Fisher's z with Fieller, Hartley & Pearson's (1957) variance for Spearman's ρ,
  ``tanh(atanh ρ ± 1.96·√(1.06 / (n − 3)))``.

Resolution: a permutation p-value is at least ``1/(B+1)``, and BH can only reject the best test of a
family of ``m`` if ``p ≤ q/m``. With ``permutations=None`` (the default), ``B = max(1000, ⌈2m/q⌉)``
so that a single strong effect can be found in any family; an explicit ``B`` is used as given, and
the result says when it is too small.

Samples with a missing value (NaN: a dead channel has no spectral entropy) are dropped per layer,
after dropping features missing in more than ``MAX_MISSING`` of them; constant features are dropped
(ρ is undefined); a layer with fewer than ``MIN_SAMPLES`` complete samples is skipped with its reason.
Scale features (total power, variance) are left out by default: every measure of a channel's
amplitude correlates with every other, which is true but says nothing about the two modalities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import MODEL_ANALYSES
from .rank_correlation import FDR_Q, RankBlock, benjamini_hochberg, fisher_ci, permutation_pvalues
from .spatial import channel_count

MIN_PERMUTATIONS = 1000
MIN_SAMPLES = 6
MAX_MISSING = 0.2
MAX_LISTED = 200


@dataclass(frozen=True)
class Source:
    """Which numbers of one statistic's result are features.

    ``layer``: top-level keys read as layer-level features (a dict of numbers gives ``key.sub``).
    ``channel_exclude``: keys under ``per_channel`` that are *not* features (every other numeric
    array of the layer's channel count is one; a dict of arrays gives ``key.sub``).
    """

    layer: tuple[str, ...] = ()
    channel_exclude: tuple[str, ...] = ()
    channel_include: tuple[str, ...] | None = None  # if set, only these per-channel keys


TEMPORAL_SOURCES: dict[str, Source] = {
    "spectrum": Source(
        layer=("band_fraction", "peak_frequency", "peak_prominence", "centroid", "entropy", "slope",
               "slope_r2", "low_fraction"),
        channel_exclude=("total_power", "state"),
    ),
}
SPATIAL_SOURCES: dict[str, Source] = {
    "spatial": Source(layer=("spatial_entropy", "concentration"), channel_exclude=("energy",)),
    "covariance": Source(layer=("effective_rank_fraction", "mean_abs_correlation"),
                         channel_exclude=("variance",)),
    "impact": Source(layer=("mean_impact",), channel_exclude=("zeta", "std")),  # ζ: a monotone map of impact
    "connectivity": Source(layer=(), channel_include=("in_strength",)),
    "moments": Source(layer=("zero_fraction", "dead_fraction"), channel_include=("zero_fraction",)),
}


# -- feature extraction (pluggable: any Source mapping) --------------------------------------------
def _numeric_array(value: Any, n: int) -> np.ndarray | None:
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != n:
        return None
    try:
        arr = np.array([np.nan if v is None else v for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.ndim == 1 else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def channel_features(stats: Mapping[str, Any], sources: Mapping[str, Source],
                     n: int) -> dict[str, np.ndarray]:
    """``{"stat.key": [n] float64}``: the per-channel arrays of the layer's results named in ``sources``."""
    out: dict[str, np.ndarray] = {}
    for stat, src in sources.items():
        per = (stats.get(stat) or {}).get("per_channel") or {}
        for key, value in per.items():
            excluded = key in src.channel_exclude
            if excluded or (src.channel_include is not None and key not in src.channel_include):
                continue
            items = value.items() if isinstance(value, Mapping) else [("", value)]
            for sub, v in items:
                arr = _numeric_array(v, n)
                if arr is not None:
                    out[f"{stat}.{key}" + (f".{sub}" if sub else "")] = arr
    return out


def layer_features(stats: Mapping[str, Any], sources: Mapping[str, Source]) -> dict[str, float]:
    """``{"stat.key": value}``: the layer-level numbers of the layer's results named in ``sources``."""
    out: dict[str, float] = {}
    for stat, src in sources.items():
        result = stats.get(stat) or {}
        for key in src.layer:
            value = result.get(key)
            items = value.items() if isinstance(value, Mapping) else [("", value)]
            for sub, v in items:
                if _is_number(v) or v is None:
                    out[f"{stat}.{key}" + (f".{sub}" if sub else "")] = np.nan if v is None else float(v)
    return out


def complete_cases(features: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Drop features missing in > MAX_MISSING of the rows, then incomplete rows, then constant features.

    Returns the kept names, the ``[n_kept, k]`` matrix and the boolean row mask ``[n]``."""
    names = [k for k, v in features.items() if np.mean(~np.isfinite(v)) <= MAX_MISSING]
    if not names:
        return [], np.zeros((0, 0)), np.zeros(0, dtype=bool)
    mat = np.column_stack([features[k] for k in names])
    rows = np.isfinite(mat).all(axis=1)
    mat = mat[rows]
    varying = [i for i in range(mat.shape[1]) if mat.shape[0] and np.ptp(mat[:, i]) > 0]
    return [names[i] for i in varying], mat[:, varying], rows


# -- one family of tests ---------------------------------------------------------------------------
@dataclass
class Block:
    """The tests of one sample set (a layer's channels, or the layers): ρ and p for every pair."""

    label: str
    temporal: list[str]
    spatial: list[str]
    ranks: RankBlock
    rows: list[int]  # which samples (channel or layer indices) were complete
    pvalue: np.ndarray | None = None
    exact: bool = False
    qvalue: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.ranks.n

    @property
    def rho(self) -> np.ndarray:
        return self.ranks.rho


def prepare_block(label: str, temporal: dict[str, np.ndarray], spatial: dict[str, np.ndarray]) -> Block | str:
    """One sample set's complete, varying features and their ranks — or the reason it cannot be tested."""
    if not temporal or not spatial:
        return "no " + ("temporal" if not temporal else "spatial") + " features"
    both = {**{("t", k): v for k, v in temporal.items()}, **{("s", k): v for k, v in spatial.items()}}
    names, mat, kept = complete_cases(both)
    t_idx = [i for i, k in enumerate(names) if k[0] == "t"]
    s_idx = [i for i, k in enumerate(names) if k[0] == "s"]
    if mat.shape[0] < MIN_SAMPLES:
        return f"{mat.shape[0]} complete samples (fewer than {MIN_SAMPLES})"
    if not t_idx or not s_idx:
        return "every " + ("temporal" if not t_idx else "spatial") + " feature is constant or missing"
    return Block(label, [names[i][1] for i in t_idx], [names[i][1] for i in s_idx],
                 RankBlock.of(mat[:, t_idx], mat[:, s_idx]), np.nonzero(kept)[0].tolist())


def control_fdr(blocks: list[Block], q: float) -> list[dict[str, Any]]:
    """BH over every test of ``blocks`` together; the significant pairs, strongest |ρ| first."""
    if not blocks:
        return []
    flat = np.concatenate([b.pvalue.ravel() for b in blocks])
    rejected, adjusted = benjamini_hochberg(flat, q)
    found, start = [], 0
    for b in blocks:
        size = b.pvalue.size
        b.qvalue = adjusted[start:start + size].reshape(b.pvalue.shape)
        for k in np.nonzero(rejected[start:start + size])[0]:
            i, j = divmod(int(k), b.pvalue.shape[1])
            lo, hi = fisher_ci(float(b.rho[i, j]), b.n)
            found.append({"layer": b.label, "temporal": b.temporal[i], "spatial": b.spatial[j],
                          "rho": float(b.rho[i, j]), "ci95": [lo, hi], "p_value": float(b.pvalue[i, j]),
                          "q_value": float(b.qvalue[i, j]), "n": b.n})
        start += size
    return sorted(found, key=lambda d: -abs(d["rho"]))


def _block_dict(b: Block) -> dict[str, Any]:
    return {"n": b.n, "temporal_features": b.temporal, "spatial_features": b.spatial,
            "rho": b.rho.tolist(), "p_value": b.pvalue.tolist(),
            "q_value": b.qvalue.tolist() if b.qvalue is not None else None, "exact": b.exact,
            "samples": b.rows}


def auto_permutations(tests: int, q: float, permutations: int | None) -> int:
    """``max(1000, ⌈2m/q⌉)`` unless given: then the smallest p, 1/(B+1), is < q/(2m)."""
    return permutations if permutations is not None else max(MIN_PERMUTATIONS, math.ceil(2 * tests / q))


def run_family(candidates: list[tuple[str, dict, dict]], q: float, permutations: int | None,
               rng: np.random.Generator) -> dict[str, Any]:
    """Test every candidate sample set, then control the FDR over all of their tests together."""
    skipped: dict[str, str] = {}
    blocks = []
    for label, t, s in candidates:
        block = prepare_block(label, t, s)
        if isinstance(block, str):
            skipped[label] = block
        else:
            blocks.append(block)
    tests = sum(b.rho.size for b in blocks)
    b_count = auto_permutations(max(tests, 1), q, permutations)
    for block, (pvalue, exact) in zip(blocks, permutation_pvalues([b.ranks for b in blocks], b_count, rng),
                                      strict=True):
        block.pvalue, block.exact = pvalue, exact
    significant = control_fdr(blocks, q)
    out: dict[str, Any] = {
        "tests": tests, "permutations": b_count, "significant_count": len(significant),
        "significant": significant[:MAX_LISTED], "blocks": {b.label: _block_dict(b) for b in blocks},
        "skipped": skipped,
    }
    if tests and 1.0 / (b_count + 1) > q / tests and not all(b.exact for b in blocks):
        out["note"] = (f"with {b_count} permutations the smallest p-value is {1 / (b_count + 1):.2g}, above "
                       f"q/m = {q / tests:.2g}: raise permutations to find a single strong effect")
    return out


# -- the model analysis ----------------------------------------------------------------------------
@MODEL_ANALYSES.register("crossmodal")
def crossmodal(
    layers: Mapping[str, Any],
    *,
    q: float = FDR_Q,
    permutations: int | None = None,
    seed: int = 0,
    temporal_sources: Mapping[str, Source] = TEMPORAL_SOURCES,
    spatial_sources: Mapping[str, Source] = SPATIAL_SOURCES,
) -> dict[str, Any]:
    """Significant temporal × spatial feature pairs over the channels of each layer and over layers."""
    ordered = sorted(layers.values(), key=lambda r: r.meta.get("order", 0))
    has_t = [r for r in ordered if any(r.stats.get(s) for s in temporal_sources)]
    has_s = [r for r in ordered if any(r.stats.get(s) for s in spatial_sources)]
    base = {"fdr_q": q, "seed": seed, "test": "spearman, permutation (rows of the spatial set permuted)",
            "ci": "fisher-z, variance 1.06/(n-3) (Fieller et al. 1957), 95%"}
    if not has_t or not has_s:
        missing = " and ".join(m for m, have in (("temporal", has_t), ("spatial", has_s)) if not have)
        return {**base, "channels": None, "layers": None,
                "note": f"no {missing} statistics: collect 'spectrum' and 'spatial'/'covariance'/'impact' "
                        "for a cross-modal analysis"}
    rng = np.random.default_rng(seed)
    per_channel = []
    for r in ordered:
        n = channel_count(r.meta) or 0
        per_channel.append((r.meta["name"], channel_features(r.stats, temporal_sources, n),
                            channel_features(r.stats, spatial_sources, n)))
    # across layers: the layers that have at least one number of each modality
    t_all = [layer_features(r.stats, temporal_sources) for r in ordered]
    s_all = [layer_features(r.stats, spatial_sources) for r in ordered]
    both = [i for i in range(len(ordered)) if _any_finite(t_all[i]) and _any_finite(s_all[i])]
    names = [ordered[i].meta["name"] for i in both]
    t_layers, s_layers = [t_all[i] for i in both], [s_all[i] for i in both]
    across = ("layers", _stack(t_layers), _stack(s_layers))
    level_layers = run_family([across], q, permutations, rng)
    block = level_layers["blocks"].get("layers")
    level_layers["layer_names"] = [names[i] for i in block["samples"]] if block else []
    return {**base, "channels": run_family(per_channel, q, permutations, rng), "layers": level_layers}


def _any_finite(row: dict[str, float]) -> bool:
    return any(math.isfinite(v) for v in row.values())


def _stack(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    keys = sorted({k for row in rows for k in row})
    return {k: np.array([row.get(k, np.nan) for row in rows], dtype=np.float64) for k in keys}
