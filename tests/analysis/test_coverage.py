"""Coverage analysis: per-layer and model-level NC, TKNC, KMNC, NBC, SNAC on hand-computed cases and
against a vectorised NumPy reference, plus the JSON path (summarise → pool) and failure paths."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from layerscope.analysis.coverage import (
    Criterion,
    layer_coverage,
    model_coverage,
    pool_coverage,
    summarize_coverage,
)
from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.report.result import LayerResult, to_jsonable
from layerscope.stats.coverage import NeuronCoverage

DENSE = Layout(-1, Axis.NONE)


def covered(rows, layout: Layout = DENSE, **opts) -> NeuronCoverage:
    acc = NeuronCoverage(**opts)
    view = make_view(torch.as_tensor(np.asarray(rows, dtype=np.float64)), layout)
    acc.update(view, channel_reduce(view, ()))
    return acc


def layer_a() -> NeuronCoverage:
    # 3 neurons × 2 inputs; ranges [0, 1] for every neuron, 4 sections, top-2
    return covered([[0.1, 0.5, 2.0], [0.3, -1.0, 1.0]], ranges=([0.0] * 3, [1.0] * 3), kmnc_sections=4)


def layer_b() -> NeuronCoverage:
    # 1 neuron × 2 inputs; degenerate reference range [6, 6]
    return covered([[5.0], [7.0]], ranges=([6.0], [6.0]), kmnc_sections=4)


def counts(c: Criterion | None) -> tuple[int, int, int] | None:
    return None if c is None else (c.covered, c.total, c.excluded_neurons)


# -- hand-computed ------------------------------------------------------------------------------------
def test_layer_a_by_hand() -> None:
    r = layer_coverage(layer_a())
    assert (r.neurons, r.inputs, r.top_k, r.kmnc_sections) == (3, 2, 2, 4)
    # scaled input 1: [0, 0.21, 1]; input 2: [0.65, 0, 1]
    assert {t: counts(c) for t, c in r.nc.items()} == {
        0.0: (3, 3, 0), 0.25: (2, 3, 0), 0.5: (2, 3, 0), 0.75: (1, 3, 0)
    }
    assert r.nc[0.25].fraction == pytest.approx(2 / 3)
    assert counts(r.tknc) == (3, 3, 0)  # top-2: {n1, n2} ∪ {n0, n2}
    # sections of width 0.25: n0 ← 0.1 (s0), 0.3 (s1); n1 ← 0.5 (s2); n2 ← 1.0 (s3, == high)
    assert counts(r.kmnc) == (4, 12, 0) and r.kmnc.fraction == pytest.approx(1 / 3)
    assert counts(r.nbc) == (2, 6, 0)  # n1 below 0 (−1), n2 above 1 (2.0)
    assert counts(r.snac) == (1, 3, 0)


def test_layer_b_degenerate_range_by_hand() -> None:
    r = layer_coverage(layer_b())
    assert all(counts(c) == (0, 1, 0) for c in r.nc.values())  # one neuron: max == min for every input
    assert counts(r.tknc) == (1, 1, 0)
    assert counts(r.kmnc) == (0, 0, 1) and math.isnan(r.kmnc.fraction)  # low == high: no sections
    assert counts(r.nbc) == (2, 2, 0)  # 5 < 6 and 7 > 6
    assert counts(r.snac) == (1, 1, 0)


def test_model_coverage_pools_neurons_not_layer_fractions() -> None:
    m = model_coverage({"a": layer_coverage(layer_a()), "b": layer_coverage(layer_b())})
    assert (m.neurons, m.layers) == (4, 2)
    assert counts(m.nc[0.0]) == (3, 4, 0) and m.nc[0.0].fraction == 0.75  # mean of layers would be 0.5
    assert counts(m.nc[0.75]) == (1, 4, 0)
    assert counts(m.tknc) == (4, 4, 0)
    assert counts(m.kmnc) == (4, 12, 1)
    assert counts(m.nbc) == (4, 8, 0) and m.nbc.fraction == 0.5
    assert counts(m.snac) == (2, 4, 0)


def test_layers_without_ranges_are_left_out_of_range_criteria() -> None:
    plain = layer_coverage(covered([[1.0, 2.0]]))
    assert plain.kmnc is None and plain.nbc is None and plain.snac is None
    m = model_coverage([layer_coverage(layer_a()), plain])
    assert counts(m.nc[0.0]) == (4, 5, 0)  # plain: [1, 2] scales to [0, 1] → n1 covered
    assert counts(m.kmnc) == (4, 12, 0) and m.extra["layers_with_ranges"] == 1
    assert model_coverage([plain]).kmnc is None


def test_unobserved_neuron_and_nan_range_are_excluded() -> None:
    nan = float("nan")
    x = torch.tensor([[[nan, nan], [1.0, 2.0], [0.0, 0.0]]])  # neuron 0 never has a finite value
    acc = NeuronCoverage(ranges=([nan, 0.0, -1.0], [nan, 2.0, 1.0]), kmnc_sections=2)
    view = make_view(x, Layout(1, Axis.TIME))
    acc.update(view, channel_reduce(view, ()))
    r = layer_coverage(acc)
    assert counts(r.nc[0.0]) == (1, 3, 0)  # neurons [NaN, 1.5, 0] → scaled [NaN, 1, 0]
    assert counts(r.kmnc) == (2, 4, 1)  # n1: 1.5 in [1, 2] (s1); n2: 0 in [0, 1] (s1)
    assert counts(r.nbc) == (0, 4, 1)


def test_accepts_a_state_dict() -> None:
    acc = layer_a()
    assert layer_coverage(acc.state_dict()) == layer_coverage(acc)


def test_empty_accumulator() -> None:
    r = layer_coverage(NeuronCoverage())
    assert r.neurons == 0 and counts(r.tknc) == (0, 0, 0) and math.isnan(r.nc[0.5].fraction)


# -- vectorised NumPy reference on random data ---------------------------------------------------------
def numpy_coverage(phi: np.ndarray, taus, k_top: int, low: np.ndarray, high: np.ndarray, k: int) -> dict:
    """Fractions over all neurons, written as array maths (phi: [N, C] float64, finite)."""
    lo, hi = phi.min(1, keepdims=True), phi.max(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = (phi - lo) / (hi - lo)
    nc = {t: float(np.mean((scaled > t).any(0))) for t in taus}
    kth = -np.sort(-phi, axis=1)[:, k_top - 1 : k_top]
    tknc = float(np.mean((phi >= kth).any(0)))
    section = np.floor((phi - low) / ((high - low) / k))
    section = np.where(phi == high, k - 1, section)
    inside = (phi >= low) & (phi <= high)
    hits = [{int(s) for s in section[inside[:, j], j]} for j in range(phi.shape[1])]
    kmnc = sum(len(h) for h in hits) / (k * phi.shape[1])
    upper, lower = (phi > high).any(0), (phi < low).any(0)
    return {"nc": nc, "tknc": tknc, "kmnc": kmnc, "nbc": (upper.sum() + lower.sum()) / (2 * phi.shape[1]),
            "snac": float(upper.mean())}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_layers_match_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    results, phis, refs = {}, [], []
    for name, (n, c) in {"conv": (40, 6), "fc": (40, 10)}.items():
        phi = rng.normal(size=(n, c)) * rng.uniform(0.5, 2, size=c)
        prof = rng.normal(size=(60, c)) * rng.uniform(0.5, 2, size=c)
        low, high = prof.min(0), prof.max(0)
        acc = NeuronCoverage(top_k=3, kmnc_sections=10, ranges=(low, high))
        for part in np.array_split(phi, 3):
            view = make_view(torch.from_numpy(part), DENSE)
            acc.update(view, channel_reduce(view, ()))
        results[name] = layer_coverage(acc)
        phis.append(phi)
        refs.append((low, high))
        expected = numpy_coverage(phi, acc.coverage_thresholds, 3, low, high, 10)
        got = results[name]
        assert {t: c.fraction for t, c in got.nc.items()} == pytest.approx(expected["nc"])
        for crit in ("tknc", "kmnc", "nbc", "snac"):
            assert getattr(got, crit).fraction == pytest.approx(expected[crit]), crit
    # the whole model: neurons of both layers together, per-input scaling still per layer
    model = model_coverage(results)
    n_total = sum(p.shape[1] for p in phis)
    per_layer = [numpy_coverage(p, (0.5,), 3, lo, hi, 10) for p, (lo, hi) in zip(phis, refs, strict=True)]
    weights = [p.shape[1] / n_total for p in phis]  # the papers: a fraction of all the DNN's neurons
    pairs = list(zip(weights, per_layer, strict=True))
    assert model.nc[0.5].fraction == pytest.approx(sum(w * r["nc"][0.5] for w, r in pairs))
    assert model.kmnc.fraction == pytest.approx(sum(w * r["kmnc"] for w, r in pairs))


# -- the JSON path used by the Probe ---------------------------------------------------------------------
def test_summaries_survive_json_and_pool_like_the_objects() -> None:
    a, b = layer_a(), layer_b()
    unobserved = NeuronCoverage()
    view = make_view(torch.tensor([[[float("nan")], [1.0]]]), Layout(1, Axis.TIME))
    unobserved.update(view, channel_reduce(view, ()))
    layers = {}
    for name, acc in {"a": a, "b": b, "u": unobserved}.items():
        summary = json.loads(json.dumps(to_jsonable(summarize_coverage(acc, {}))))
        layers[name] = LayerResult(meta={"name": name}, stats={"coverage": summary})
    assert layers["a"].stats["coverage"]["neuron_low"] == [0.1, -1.0, 1.0]
    nc_a = layers["a"].stats["coverage"]["nc"]["0.25"]
    assert (nc_a["covered"], nc_a["total"], nc_a["fraction"]) == (2, 3, pytest.approx(2 / 3))
    assert layers["b"].stats["coverage"]["kmnc"]["fraction"] is None  # 0 of 0 sections: NaN → JSON null
    assert layers["u"].stats["coverage"]["neuron_low"] == [None, 1.0]
    # a reference range list with None (never observed) is accepted as ranges
    again = NeuronCoverage(ranges=(layers["u"].stats["coverage"]["neuron_low"],
                                   layers["u"].stats["coverage"]["neuron_high"]))
    assert again.has_ranges
    pooled = pool_coverage(layers)
    expected = model_coverage([layer_coverage(x) for x in (a, b, unobserved)]).as_dict()
    assert pooled == expected
    assert pool_coverage({}) == {}


# -- failure paths -------------------------------------------------------------------------------------
def test_model_coverage_errors() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        model_coverage([])
    other = layer_coverage(covered([[1.0, 2.0]], coverage_thresholds=(0.1,)))
    with pytest.raises(ValueError, match="different thresholds"):
        model_coverage([layer_coverage(layer_a()), other])
