"""Health flags on models built so that each condition holds (or does not) by construction."""

import torch
from torch import nn

from layerscope._probe import Probe


def run(model, x, **kw):
    with torch.no_grad(), Probe(model, stats=("moments",), **kw) as probe:
        model(x)
    return probe.result()


def flags(result, layer):
    return {f["flag"]: f["level"] for f in result.model["health"]["layers"][layer]["flags"]}


def test_dead_channels_are_flagged_with_the_right_count():
    lin = nn.Linear(4, 6)
    with torch.no_grad():
        lin.weight[:4] = 0.0
        lin.bias[:4] = -1.0  # channels 0-3 always negative → always 0 after ReLU
    model = nn.Sequential(lin, nn.ReLU())
    res = run(model, torch.randn(50, 4))
    moments = res.layers["1"].stats["moments"]
    assert moments["dead_channels"] == 4 and moments["dead_fraction"] == 4 / 6
    assert flags(res, "1") == {"dead_channels": "error"}  # more than half are dead
    assert flags(res, "0") == {"dead_channels": "error"}  # constant −1 before the ReLU too


def test_saturation_of_a_bounded_activation():
    model = nn.Sequential(nn.Linear(3, 8), nn.Sigmoid())
    with torch.no_grad():
        model[0].weight.mul_(100.0)
    x = torch.randn(200, 3)
    res = run(model, x)
    sat = res.layers["1"].stats["moments"]["saturation"]
    y = model(x).detach().double()
    expected = float(((y < 0.02) | (y > 0.98)).double().mean())
    assert abs(sat["total"] - expected) < 1e-12
    assert "saturated" in flags(res, "1")
    calm = run(nn.Sequential(nn.Linear(3, 8), nn.Sigmoid()), x * 1e-3)
    assert "saturated" not in flags(calm, "1")


def test_exploding_and_vanishing_scale_across_depth():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    with torch.no_grad():
        model[1].weight.mul_(1e4)
        model[2].weight.mul_(1e-8)
        model[1].bias.zero_()
        model[2].bias.zero_()
    res = run(model, torch.randn(64, 4))
    assert "exploding" in flags(res, "1")
    assert "vanishing" in flags(res, "2")
    assert flags(res, "0") == {}


def test_nan_and_inf_are_counted_and_reported_not_raised():
    class Bad(nn.Module):
        def forward(self, x):
            y = x.clone()
            y[0, 0] = float("nan")
            y[1, 1] = float("inf")
            return y

    model = nn.Sequential(nn.Linear(3, 3), Bad(), nn.ReLU())
    res = run(model, torch.randn(4, 3))
    m = res.layers["1"].stats["moments"]
    assert (m["nan"], m["inf"]) == (1, 1)
    assert flags(res, "1")["nonfinite"] == "error"
    assert res.model["health"]["counts"]["error"] >= 1
