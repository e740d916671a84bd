"""Cross-modal tests: Spearman vs SciPy, permutation p-values vs exhaustive enumeration, BH by hand,
a planted dependence found, and the false discovery rate on independent data."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, false_discovery_control, rankdata, spearmanr
from torch import nn

from layerscope._probe import Probe
from layerscope.analysis.crossmodal import crossmodal
from layerscope.analysis.rank_correlation import (
    RankBlock,
    benjamini_hochberg,
    fisher_ci,
    permutation_pvalues,
    permutation_test,
    spearman_matrix,
)
from layerscope.analysis.spatial import connectivity_paths
from layerscope.report.result import LayerResult, ProbeResult, to_jsonable


def brute_force_p(a: np.ndarray, b: np.ndarray) -> float:
    """#{π : |ρ(a, b∘π)| ≥ |ρ(a, b)|} / n! over every permutation: Pearson's r of SciPy's average ranks."""
    ra, rb = rankdata(a), rankdata(b)
    perms = np.array(list(itertools.permutations(range(len(a)))))
    rbp = rb[perms]  # (n!, n)
    ca, cb = ra - ra.mean(), rbp - rbp.mean(axis=1, keepdims=True)
    r = (cb @ ca) / np.sqrt((ca**2).sum() * (cb**2).sum(axis=1))
    obs = abs(spearmanr(a, b)[0])
    return float(np.mean(np.abs(r) >= obs - 1e-12))


def test_spearman_matrix_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(25, 3))
    b = np.column_stack([a[:, 0] ** 3 + rng.normal(size=25), np.round(rng.normal(size=25)),
                         rng.normal(size=25)])
    ref = spearmanr(np.hstack([a, b]))[0][:3, 3:]
    np.testing.assert_allclose(spearman_matrix(a, b), ref, rtol=1e-12)


def test_exact_enumeration_on_a_tiny_case():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 2))
    tied = [1.0, 1.0, 2.0, 3.0, 3.0, 4.0]
    b = np.column_stack([a[:, 0] + 0.3 * rng.normal(size=6), tied])
    _, p, exact = permutation_test(a, b, permutations=1000, rng=rng)  # 6! = 720 ≤ 1000: enumerated
    assert exact
    for i, j in itertools.product(range(2), range(2)):
        assert p[i, j] == pytest.approx(brute_force_p(a[:, i], b[:, j]), abs=1e-12)


@pytest.mark.parametrize("tied", ["none", "a", "b", "both"])
def test_monte_carlo_p_values_agree_with_enumeration(tied):
    """n = 8: the exact p from all 8! = 40320 permutations (brute force) vs B = 20000 random ones, for
    each path of the shared-permutation shortcut (tie-free pair, one tied feature, two tied)."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(8, 1))
    b = a + 1.2 * rng.normal(size=(8, 1))
    if tied in ("a", "both"):
        a = np.round(a)
    if tied in ("b", "both"):
        b = np.round(b)
    exact_p = brute_force_p(a[:, 0], b[:, 0])
    _, p, exact = permutation_test(a, b, permutations=20000, rng=np.random.default_rng(3))
    assert not exact
    se = math.sqrt(exact_p * (1 - exact_p) / 20000)
    assert abs(p[0, 0] - exact_p) <= 4 * se + 1 / 20001, (p[0, 0], exact_p)


def test_blocks_sharing_permutations_get_their_own_p_values():
    # three blocks of the same n (and one small enough to enumerate) tested together = each alone, in law
    rng = np.random.default_rng(11)
    data = [(rng.normal(size=(9, 2)), rng.normal(size=(9, 3))) for _ in range(3)]
    data[1] = (data[1][0], np.column_stack([data[1][0][:, 0] + 0.5 * rng.normal(size=9), data[1][1][:, 1:]]))
    data.append((rng.normal(size=(5, 1)), rng.normal(size=(5, 2))))
    together = permutation_pvalues([RankBlock.of(a, b) for a, b in data], 30000, np.random.default_rng(12))
    for (a, b), (p, exact) in zip(data, together, strict=True):
        alone = permutation_test(a, b, 30000, np.random.default_rng(13))[1]
        assert exact == (a.shape[0] == 5)
        np.testing.assert_allclose(p, alone, atol=4 * math.sqrt(0.25 / 30000) + 1e-12)


def test_benjamini_hochberg_by_hand_and_against_scipy():
    # m = 3, q = 0.05: thresholds 1/60, 2/60, 3/60. p(1) = 0.02 misses its threshold but p(2) = 0.024
    # meets its own, so the step-up rejects both (a step-down procedure would reject none).
    rejected, adjusted = benjamini_hochberg(np.array([0.024, 0.9, 0.02]), 0.05)
    assert rejected.tolist() == [True, False, True]
    np.testing.assert_allclose(adjusted, [0.036, 0.9, 0.036])  # 3·0.024/2, 0.9, min(3·0.02/1, 0.036)
    rejected, _ = benjamini_hochberg(np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205]), 0.05)
    assert rejected.tolist() == [True, True] + [False] * 6  # 0.039 > 3·0.05/8
    p = np.random.default_rng(4).uniform(size=(7, 9)) ** 3
    rejected, adjusted = benjamini_hochberg(p, 0.05)
    np.testing.assert_allclose(adjusted, false_discovery_control(p.ravel()).reshape(7, 9), rtol=1e-12)
    assert np.array_equal(rejected, adjusted <= 0.05)
    assert benjamini_hochberg(np.zeros(0))[0].size == 0


def test_fisher_interval():
    lo, hi = fisher_ci(0.5, 28)
    half = 1.959963984540054 * math.sqrt(1.06 / 25)
    assert (lo, hi) == pytest.approx((math.tanh(math.atanh(0.5) - half), math.tanh(math.atanh(0.5) + half)))
    assert all(math.isnan(v) for v in fisher_ci(0.5, 3))


def layer(name, order, n, temporal=None, spatial=None, layer_t=None, layer_s=None):
    """A LayerResult shaped like the probe's: spectrum / spatial / impact results with per-channel arrays."""
    stats = {}
    if temporal is not None or layer_t is not None:
        stats["spectrum"] = {"per_channel": {**(temporal or {}), "state": ["mixed"] * n}, **(layer_t or {})}
    if spatial is not None or layer_s is not None:
        stats["spatial"] = {"per_channel": spatial or {}, **(layer_s or {})}
    return LayerResult(meta={"name": name, "order": order, "shape": [n, 4, 4], "channels_last": False},
                       stats=stats)


def test_planted_dependence_is_found_and_only_it():
    rng = np.random.default_rng(5)
    n = 40
    centroid = rng.uniform(size=n)
    temporal = {"centroid": centroid, "entropy": rng.normal(size=n), "slope": rng.normal(size=n),
                "total_power": rng.normal(size=n),
                "band_fraction": {"low": rng.uniform(size=n), "high": rng.uniform(size=n)}}
    spatial = {"spatial_entropy": np.exp(centroid) + 0.1 * rng.normal(size=n),  # the planted dependence
               "concentration": rng.normal(size=n), "energy": rng.normal(size=n)}
    out = crossmodal({"a": layer("a", 0, n, temporal, spatial)}, seed=1)
    found = out["channels"]["significant"]
    pairs = [(f["temporal"], f["spatial"]) for f in found]
    assert pairs == [("spectrum.centroid", "spatial.spatial_entropy")]
    assert found[0]["rho"] > 0.8 and found[0]["ci95"][0] < found[0]["rho"] < found[0]["ci95"][1]
    assert found[0]["q_value"] <= 0.05
    block = out["channels"]["blocks"]["a"]
    # scale features (total power, energy) and strings (state) are not features by default
    assert "spectrum.total_power" not in block["temporal_features"]
    assert "spatial.energy" not in block["spatial_features"]
    assert "spectrum.band_fraction.low" in block["temporal_features"]
    assert out["layers"]["skipped"] == {"layers": "no temporal features"}  # no layer-level numbers given


def test_layer_level_planted_dependence():
    rng = np.random.default_rng(6)
    slope = np.linspace(-2, 0, 10)
    layers = {f"l{i}": layer(f"l{i}", i, 4, layer_t={"slope": slope[i], "entropy": rng.uniform()},
                             layer_s={"spatial_entropy": slope[i] ** 3 + 0.01 * rng.normal(),
                                      "concentration": rng.uniform()}) for i in range(10)}
    out = crossmodal(layers)["layers"]
    assert out["layer_names"] == [f"l{i}" for i in range(10)]
    assert [(f["temporal"], f["spatial"]) for f in out["significant"]] == [("spectrum.slope",
                                                                            "spatial.spatial_entropy")]


def test_missing_modality_gives_an_empty_explained_result():
    rng = np.random.default_rng(7)
    only_spatial = {"a": layer("a", 0, 10, spatial={"concentration": rng.normal(size=10)})}
    out = crossmodal(only_spatial)
    assert out["channels"] is None and out["layers"] is None and "no temporal" in out["note"]
    only_temporal = {"a": layer("a", 0, 10, temporal={"centroid": rng.normal(size=10)})}
    assert "no spatial" in crossmodal(only_temporal)["note"]
    assert "no temporal and spatial" in crossmodal({})["note"]


def test_dead_channels_are_dropped_and_small_layers_skipped():
    rng = np.random.default_rng(8)
    n = 20
    centroid = rng.normal(size=n)
    centroid[:3] = np.nan  # dead channels have no spectral shape
    out = crossmodal({
        "a": layer("a", 0, n, {"centroid": centroid}, {"concentration": rng.normal(size=n)}),
        "b": layer("b", 1, 4, {"centroid": rng.normal(size=4)}, {"concentration": rng.normal(size=4)}),
    })
    assert out["channels"]["blocks"]["a"]["n"] == 17 and out["channels"]["blocks"]["a"]["samples"][0] == 3
    assert out["channels"]["skipped"]["b"].startswith("4 complete samples")


def null_trial(rng: np.random.Generator, n: int = 30) -> dict:
    """Independent temporal and spatial features (one of them with ties), in two layers."""
    def one(name, order):
        temporal = {"centroid": rng.normal(size=n), "entropy": rng.uniform(size=n),
                    "slope": np.round(rng.normal(size=n), 1)}
        spatial = {"spatial_entropy": rng.normal(size=n), "concentration": rng.exponential(size=n)}
        return layer(name, order, n, temporal, spatial)

    return {"a": one("a", 0), "b": one("b", 1)}


def test_false_discoveries_on_independent_data_stay_within_q():
    """200 independent trials, each 2 layers × 3 temporal × 2 spatial features = 12 true-null tests.

    When every null is true, a trial's false discovery proportion is 1 if BH rejects anything and 0
    otherwise, so FDR = P(any rejection) ≤ q = 0.05. Asserted: the number of trials with a false
    discovery is ≤ 18, the 99th percentile of Binomial(200, 0.05) — a rate of 0.05 would exceed it with
    probability 0.006 — and the observed FDR is printed.
    """
    rng = np.random.default_rng(9)
    trials = 200
    with_false = 0
    for _ in range(trials):
        out = crossmodal(null_trial(rng), seed=int(rng.integers(2**31)))
        with_false += out["channels"]["significant_count"] > 0
    print(f"observed FDR under the global null: {with_false / trials:.3f}")
    assert binom.ppf(0.99, trials, 0.05) == 18
    assert with_false <= 18


def test_false_discovery_proportion_with_true_effects_mixed_in():
    """200 trials of one layer with 2 planted dependencies among 4 × 3 = 12 tests (10 true nulls).

    BH guarantees E[FDP] ≤ q·m0/m = 0.042. Asserted: the mean FDP over the trials is below 0.05 plus
    three standard errors of that mean, and the planted pairs are found in at least 90% of trials.
    """
    rng = np.random.default_rng(10)
    n, fdp, power = 40, [], []
    for _ in range(200):
        t = {k: rng.normal(size=n) for k in ("centroid", "entropy", "slope", "peak_frequency")}
        s = {"spatial_entropy": t["centroid"] + 0.5 * rng.normal(size=n),
             "concentration": -t["slope"] + 0.5 * rng.normal(size=n), "other": rng.normal(size=n)}
        out = crossmodal({"a": layer("a", 0, n, t, s)}, seed=int(rng.integers(2**31)))
        found = {(f["temporal"], f["spatial"]) for f in out["channels"]["significant"]}
        true = {("spectrum.centroid", "spatial.spatial_entropy"), ("spectrum.slope", "spatial.concentration")}
        fdp.append(len(found - true) / max(len(found), 1))
        power.append(true <= found)
    fdp = np.array(fdp)
    print(f"mean FDP {fdp.mean():.3f}, power {np.mean(power):.3f}")
    assert fdp.mean() <= 0.05 + 3 * fdp.std(ddof=1) / math.sqrt(len(fdp))
    assert np.mean(power) >= 0.9


def test_runs_on_probe_results_of_a_real_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1))
    stats = ("moments", "spectrum", "spatial", "covariance", "connectivity")
    with Probe(model, stats=stats) as probe, torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 16, 16))
    result = probe.result()
    out = result.model["crossmodal"]
    # re-running on the JSON report (NaN → null) gives the same answer
    again = ProbeResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert to_jsonable(crossmodal(again.layers)) == to_jsonable(out)
    assert to_jsonable(connectivity_paths(again.layers)) == to_jsonable(result.model["connectivity"])
    blocks = out["channels"]["blocks"]
    assert set(blocks) | set(out["channels"]["skipped"]) == {"0", "1", "2"}
    for b in blocks.values():
        assert np.array(b["rho"]).shape == (len(b["temporal_features"]), len(b["spatial_features"]))
        assert all(0 < p <= 1 for row in b["p_value"] for p in row)
