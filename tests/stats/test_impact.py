"""Taylor impact vs autograd by hand, vs true ablation, and the impact pass leaving the model alone."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from torch import nn

from layerscope._errors import ConfigError, DataError
from layerscope._impact import channel_ablation, default_loss, impact_pass
from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.stats.impact import TaylorImpact
from layerscope.zoo.digits import digits_data, trained_digits_cnn


def test_update_grad_matches_a_numpy_loop():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, 4, 4, generator=gen, dtype=torch.float64)
    g = torch.randn(5, 3, 4, 4, generator=gen, dtype=torch.float64)
    acc = TaylorImpact()
    layout = Layout(1, Axis.SPACE)
    acc.update_grad(make_view(a, layout), make_view(g, layout))
    t = np.array([[(a[n, c] * g[n, c]).sum().item() for c in range(3)] for n in range(5)])
    np.testing.assert_allclose(acc.impact().numpy(), np.abs(t).mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.sum.numpy(), t.sum(0), rtol=1e-12)
    np.testing.assert_allclose(acc.sq_sum.numpy(), (t**2).sum(0), rtol=1e-12)
    assert acc.samples == 5


def test_update_does_nothing_without_a_gradient():
    acc = TaylorImpact()
    acc.update(make_view(torch.randn(2, 3), Layout(-1, Axis.NONE)), None)
    assert acc.samples == 0 and acc.abs_sum is None


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), cuts=st.lists(st.integers(1, 8), max_size=3), seed=st.integers(0, 2**16))
def test_merge_of_any_split_equals_one_pass(n, cuts, seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 4, 6, generator=gen, dtype=torch.float64)
    g = torch.randn(n, 4, 6, generator=gen, dtype=torch.float64)
    layout = Layout(1, Axis.TIME)
    whole = TaylorImpact()
    whole.update_grad(make_view(a, layout), make_view(g, layout))
    merged = TaylorImpact()
    bounds = sorted({c for c in cuts if c < n})
    for pa, pg in zip(torch.tensor_split(a, bounds), torch.tensor_split(g, bounds), strict=True):
        piece = TaylorImpact()
        piece.update_grad(make_view(pa, layout), make_view(pg, layout))
        merged.merge(TaylorImpact.from_state_dict(piece.state_dict()))
    assert merged.samples == n
    for f in ("abs_sum", "sum", "sq_sum"):
        torch.testing.assert_close(getattr(merged, f), getattr(whole, f), rtol=1e-12, atol=1e-12)


def hand_taylor(model, x, y, layer, loss_fn):
    """t[n, c] = Σ_s a·∂L/∂a from autograd directly (no Probe), for a channels-first or dense layer."""
    kept = {}

    def keep(module, args, out):
        out.retain_grad()
        kept["a"] = out

    handle = dict(model.named_modules())[layer].register_forward_hook(keep)
    try:
        loss_fn(model(x), y).sum().backward()
    finally:
        handle.remove()
    a, g = kept["a"], kept["a"].grad
    return (a * g).flatten(2).sum(2) if a.dim() > 2 else a * g


def test_impact_pass_matches_autograd_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    x, y = torch.randn(20, 1, 4, 4), torch.randint(0, 3, (20,))
    result = impact_pass(model, (x, y), batch_size=8, layers=["0", "3"])
    for layer in ("0", "3"):
        t = hand_taylor(model, x, y, layer, default_loss).detach().double()
        stats = result.layers[layer].stats["impact"]
        assert stats["samples"] == 20
        np.testing.assert_allclose(stats["per_channel"]["impact"], t.abs().mean(0), rtol=1e-5)
        np.testing.assert_allclose(stats["per_channel"]["signed"], t.mean(0), rtol=1e-5, atol=1e-9)


def test_linear_loss_gives_exact_first_order_and_ablation_agrees():
    # loss = Σ outputs: ∂L/∂a = 1, so t_n(c) = a_n,c and zeroing c changes the loss by exactly −a_n,c
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4))
    x = torch.randn(10, 3)

    def loss_fn(out, _):
        return out.sum(1)

    stats = impact_pass(model, x, loss_fn=loss_fn).layers["0"].stats["impact"]["per_channel"]
    with torch.no_grad():
        a = model(x).double()
    np.testing.assert_allclose(stats["impact"], a.abs().mean(0), rtol=1e-6)
    abl = channel_ablation(model, x, "0", loss_fn=loss_fn, batch_size=4)
    np.testing.assert_allclose(abl.mean_delta, -a.mean(0).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(abl.mean_abs_delta, a.abs().mean(0).numpy(), rtol=1e-5)
    assert abl.samples == 10 and abl.channels == [0, 1, 2, 3]


def test_impact_pass_leaves_the_model_as_it_was():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(8, 2))
    model.train()
    model[1].eval()  # a mix of modes must come back as it was
    model[4].weight.grad = torch.ones_like(model[4].weight)  # an existing gradient must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():  # the caller's autograd mode does not matter, nor inference-mode data
        data = (torch.randn(6, 1, 4, 4), torch.tensor([0, 1] * 3))
        result = impact_pass(model, data)
    assert result.layers["0"].stats["impact"]["samples"] == 6
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and not model[1].training and model[2].training
    assert torch.equal(model[4].weight.grad, torch.ones_like(model[4].weight))
    assert model[0].weight.grad is None


def test_frozen_layers_still_get_impact():
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2))
    model[0].requires_grad_(False)  # a frozen first layer: its output still has a gradient
    x = torch.randn(4, 3)
    result = impact_pass(model, x)  # no labels: the output norm
    assert result.layers["0"].stats["impact"]["samples"] == 4
    t = hand_taylor(model, x.clone().requires_grad_(True), None, "0", default_loss).detach().double()
    np.testing.assert_allclose(result.layers["0"].stats["impact"]["per_channel"]["impact"], t.abs().mean(0),
                               rtol=1e-5)
    assert not model[0].weight.requires_grad
    frozen = nn.Sequential(nn.Linear(3, 2)).requires_grad_(False)
    assert impact_pass(frozen, x).layers["0"].stats["impact"]["samples"] == 4


def test_default_loss_choices_and_errors():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 0])
    torch.testing.assert_close(default_loss(logits, labels),
                               nn.functional.cross_entropy(logits, labels, reduction="none"))
    torch.testing.assert_close(default_loss(logits, None), logits.norm(dim=1))
    torch.testing.assert_close(default_loss(logits, logits * 0), (logits**2).sum(1))
    with pytest.raises(ConfigError, match="loss_fn"):
        default_loss(logits, torch.tensor([0, 1]).float())
    with pytest.raises(ConfigError, match="no module"):
        channel_ablation(nn.Linear(2, 2), torch.randn(2, 2), "nope")
    with pytest.raises(DataError, match="generator"):
        channel_ablation(nn.Sequential(nn.Linear(2, 2)), iter([]), "0")


@pytest.fixture(scope="module")
def digits():
    model = trained_digits_cnn()
    _, _, x_test, y_test = digits_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~100 small forward passes: one thread is much faster on 2 shared cores
    try:
        yield model, (x_test, y_test)
    finally:
        torch.set_num_threads(threads)


def test_taylor_impact_ranks_channels_like_true_ablation(digits):
    """The ζ basis, mean_n |Σ_s a·∂ℓ_n/∂a|, estimates mean_n |ℓ_n(channel zeroed) − ℓ_n| to first order.

    On the digits CNN's held-out split the Spearman ρ between the two over a layer's channels is
    0.92 (conv1, 16 channels), 0.95 (conv2, 32) and 0.99 (conv3, 64) with torch 2.13 on CPU; fc1
    (tanh, 64 units) reaches only 0.67 and is not asserted. The aggregate version, |mean_n t_n| vs
    |mean_n Δℓ_n| (where gains and losses on different samples cancel), is weaker: 0.68 / 0.58 / 0.82;
    we assert it on conv3 only.
    """
    model, data = digits
    impact = impact_pass(model, data, layers=["conv1", "conv2", "conv3"])
    for layer in ("conv1", "conv2", "conv3"):
        per = impact.layers[layer].stats["impact"]["per_channel"]
        abl = channel_ablation(model, data, layer, batch_size=512)
        rho = spearmanr(per["impact"], abl.mean_abs_delta)[0]
        assert rho >= 0.8, (layer, rho)
        if layer == "conv3":
            assert spearmanr(np.abs(per["signed"]), np.abs(abl.mean_delta))[0] >= 0.6
