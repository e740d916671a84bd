"""Spatial analyses (density grid, ζ, correlation, connection strengths, paths) vs NumPy references."""

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from layerscope._probe import Probe
from layerscope.analysis.spatial import (
    REDUNDANT_R,
    connectivity_paths,
    normalised_entropy,
    summarize_connectivity,
    summarize_covariance,
    summarize_impact,
    summarize_spatial,
)
from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.report.result import LayerResult, to_jsonable
from layerscope.stats.connectivity import ConnectionStrength
from layerscope.stats.covariance import ChannelCovariance
from layerscope.stats.impact import TaylorImpact
from layerscope.stats.spatial import SpatialDensity

META = {"name": "layer", "shape": [], "channels_last": False}


SPACE = Layout(1, Axis.SPACE)


def feed(acc, x, layout=SPACE):
    view = make_view(x, layout)
    acc.update(view, channel_reduce(view, (0.0,), "torch"))


def test_entropy_is_one_for_even_and_zero_for_one_cell():
    grids = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 5.0, 0.0, 0.0], [1.0, 3.0, 0.0, 0.0]],
                         dtype=torch.float64)
    h = normalised_entropy(grids)
    p = np.array([0.25, 0.75])
    np.testing.assert_allclose(h.numpy(), [1.0, 0.0, -(p * np.log(p)).sum() / np.log(4)], atol=1e-12)


def test_spatial_summary_top_channels_and_layer_grid():
    scale = torch.tensor([1.0, 4.0, 0.5, 3.0, 2.0], dtype=torch.float64).reshape(1, -1, 1, 1)
    x = torch.randn(6, 5, 8, 8, dtype=torch.float64) * scale
    x[:, 0, :4, :4] += 10.0  # channel 0 concentrated in the top-left quarter
    acc = SpatialDensity(spatial_grid=4, spatial_top_k=2)
    feed(acc, x)
    out = summarize_spatial(acc, META)
    energy = (x.numpy() ** 2).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(out["per_channel"]["energy"], energy, rtol=1e-12)
    assert [t["channel"] for t in out["top_channels"]] == list(np.argsort(-energy)[:2])
    np.testing.assert_allclose(out["layer_grid"], acc.energy().sum(0).numpy(), rtol=1e-12)
    assert out["grid_shape"] == [4, 4] and out["spatial_shape"] == [8, 8]
    ent = out["per_channel"]["spatial_entropy"]
    assert ent[0] < 0.7 < min(ent[1:])  # the concentrated channel has the lowest entropy
    assert out["centre_of_mass"][0] < 0.5 and out["centre_of_mass"][1] < 0.5
    json.dumps(to_jsonable(out))


def test_spatial_summary_of_a_dense_layer_and_an_empty_one():
    acc = SpatialDensity()
    feed(acc, torch.randn(4, 3), Layout(-1, Axis.NONE))
    out = summarize_spatial(acc, META)
    assert out["layer_grid"] is None and out["grid_shape"] == [] and len(out["per_channel"]["energy"]) == 3
    assert summarize_spatial(SpatialDensity(), META) == {"samples": 0, "grid": 8, "skipped": 0}


def test_impact_zeta_is_the_layer_z_score():
    acc = TaylorImpact()
    a, g = torch.randn(7, 5, 3, dtype=torch.float64), torch.randn(7, 5, 3, dtype=torch.float64)
    acc.update_grad(make_view(a, Layout(1, Axis.TIME)), make_view(g, Layout(1, Axis.TIME)))
    out = summarize_impact(acc, META)
    impact = np.abs((a * g).sum(2).numpy()).mean(0)
    zeta = (impact - impact.mean()) / impact.std()
    np.testing.assert_allclose(out["per_channel"]["zeta"], zeta, rtol=1e-10)
    assert out["low_impact_channels"] == [i for i, z in enumerate(out["per_channel"]["zeta"]) if z < -1]
    assert summarize_impact(TaylorImpact(), META)["samples"] == 0


def test_covariance_summary_against_numpy():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(400, 4, generator=gen, dtype=torch.float64)
    cols = [base[:, 0], base[:, 1], 2 * base[:, 0] + 0.01 * base[:, 2],  # channel 2 ≈ 2 × channel 0
            base[:, 2], torch.zeros(400, dtype=torch.float64), -base[:, 1] + 0.02 * base[:, 3]]
    x = torch.stack(cols, 1).reshape(40, 10, 6).transpose(1, 2).contiguous()  # (N, C, S)
    acc = ChannelCovariance(covariance_samples=None)  # every row: the reference is np.cov of all of them
    feed(acc, x, Layout(1, Axis.TIME))
    out = summarize_covariance(acc, META)
    rows = torch.stack(cols, 1).numpy()
    live = [0, 1, 2, 3, 5]  # channel 4 is constant
    r = np.corrcoef(rows[:, live], rowvar=False)
    assert out["constant_channels"] == 1 and out["correlation_channels"] == live
    np.testing.assert_allclose(out["correlation"], r.round(3), atol=1e-12)
    lam = np.linalg.eigvalsh(r)
    np.testing.assert_allclose(out["effective_rank"], lam.sum() ** 2 / (lam**2).sum(), rtol=1e-10)
    np.testing.assert_allclose(out["eigenvalues"], lam[::-1], rtol=1e-9, atol=1e-12)
    lam_c = np.linalg.eigvalsh(np.cov(rows, rowvar=False, bias=True))
    pr_c = lam_c.sum() ** 2 / (lam_c**2).sum()
    np.testing.assert_allclose(out["effective_rank_covariance"], pr_c, rtol=1e-9)
    pairs = itertools.combinations(range(5), 2)
    expected = {(live[i], live[j]) for i, j in pairs if abs(r[i, j]) > REDUNDANT_R}
    assert expected == {(0, 2), (1, 5)}
    assert {(p["a"], p["b"]) for p in out["redundant_pairs"]} == expected and out["redundant_pair_count"] == 2
    assert np.isnan(out["per_channel"]["mean_abs_correlation"][4])
    np.testing.assert_allclose(out["per_channel"]["mean_abs_correlation"][0],
                               (np.abs(r[0]).sum() - 1) / 4, rtol=1e-10)
    json.dumps(to_jsonable(out))


def test_capped_covariance_names_the_tracked_channels():
    acc = ChannelCovariance(covariance_max_channels=3)
    feed(acc, torch.randn(8, 7, 5), Layout(1, Axis.TIME))
    out = summarize_covariance(acc, META)
    assert out["capped"] and out["tracked_channels"] == [0, 3, 6] and out["channels"] == 7
    assert sum(np.isnan(out["per_channel"]["mean_abs_correlation"])) == 4


def test_connectivity_summary_strongest_and_orientation():
    w = torch.tensor([[1.0, -5.0], [0.5, 2.0], [-3.0, 0.0]])
    out = summarize_connectivity(ConnectionStrength(weight=w), {"shape": [3], "channels_last": True})
    assert out["strongest"][:2] == [{"out": 0, "in": 1, "strength": 5.0},
                                    {"out": 2, "in": 0, "strength": 3.0}]
    assert out["orientation_ok"] and out["kind"] == "linear"
    np.testing.assert_allclose(out["per_channel"]["in_strength"], np.linalg.norm(w.abs().numpy(), axis=1))
    flipped = summarize_connectivity(ConnectionStrength(weight=w), {"shape": [2], "channels_last": True})
    assert not flipped["orientation_ok"] and "note" in flipped
    assert summarize_connectivity(ConnectionStrength(), META)["available"] is False


def brute_force_paths(s1: np.ndarray, s2: np.ndarray, m: int) -> dict[int, float]:
    """Strongest i → j → k path through each channel j, over every i, every k and every b-input of j."""
    return {j: max(s1[j, i] * s2[k, j * m + r] for i in range(s1.shape[1]) for k in range(s2.shape[0])
                   for r in range(m)) for j in range(s1.shape[0])}


@pytest.mark.parametrize("flatten", [False, True])
def test_strongest_paths_match_brute_force(flatten):
    torch.manual_seed(0)
    if flatten:
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 4))
        last, m = "3", 16
    else:
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 1))
        last, m = "2", 1
    with Probe(model, stats=("connectivity",)) as probe, torch.no_grad():
        model(torch.randn(2, 2, 4, 4))
    result = probe.result()
    paths = result.model["connectivity"]["pairs"]
    assert [(p["from"], p["to"]) for p in paths] == [("0", last)]
    s1 = probe._layers["0"].accumulators["connectivity"].matrix.double().numpy()
    s2 = probe._layers[last].accumulators["connectivity"].matrix.double().numpy()
    best = brute_force_paths(s1, s2, m)
    listed = {p["via"]: p for p in paths[0]["paths"]}
    assert set(listed) == {0, 1, 2}
    for j, p in listed.items():
        np.testing.assert_allclose(p["strength"], best[j], rtol=1e-6)
        np.testing.assert_allclose(s1[j, p["input"]] * s2[p["output"], p["via_input"]], best[j], rtol=1e-6)
    strengths = [p["strength"] for p in paths[0]["paths"]]
    assert strengths == sorted(strengths, reverse=True)


def test_paths_skip_layers_that_do_not_chain():
    def layer(name, order, shape, kind="conv"):
        s = torch.rand(*shape)
        weight = s.unsqueeze(-1) if kind == "conv" else s
        stats = summarize_connectivity(ConnectionStrength(weight=weight), {})
        return LayerResult(meta={"name": name, "order": order}, stats={"connectivity": stats})

    layers = {"a": layer("a", 0, (4, 3)), "b": layer("b", 1, (5, 8)), "c": layer("c", 2, (2, 5), "linear")}
    out = connectivity_paths(layers)
    assert [(p["from"], p["to"]) for p in out["pairs"]] == [("b", "c")]
    assert out["unchained"][0]["from"] == "a" and "4 outputs" in out["unchained"][0]["reason"]
    assert connectivity_paths({})["pairs"] == []
