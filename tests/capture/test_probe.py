"""The Probe end to end: capture of every output kind, statistics vs a brute-force NumPy reference."""

import contextlib
import copy
import gc
import weakref
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from layerscope import LayerSelectionError
from layerscope._probe import Probe


class ModelOutput(OrderedDict):
    """HF-style output object: a mapping whose fields are also attributes."""

    def __getattr__(self, key):
        return self[key]


class TupleDictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        out, _ = self.lstm(x)  # LSTM returns a tuple: (out, (h, c))
        return ModelOutput(hidden=out, logits=self.head(out), ids=torch.zeros(2, dtype=torch.long))


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = TupleDictModel()

    def forward(self, x):
        return self.enc(x)


def test_tuple_dict_and_model_output_are_captured_and_named():
    model = Wrapper()
    with Probe(model, layers=["enc.lstm", "enc"], stats=("moments",)) as probe:
        model(torch.randn(2, 5, 4))
    names = set(probe.layer_names)
    assert {"enc.lstm[0]", "enc.lstm[1][0]", "enc.lstm[1][1]", 'enc["hidden"]', 'enc["logits"]'} <= names
    assert not any("ids" in n for n in names)  # integer tensors are skipped


def test_shared_module_accumulates_every_call():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 4), relu, nn.Linear(4, 4), relu)
    with Probe(model, stats=("moments",)) as probe:
        model(torch.randn(5, 3))
    res = probe.result()
    # nn.Sequential registers the shared ReLU once (name "1"); it saw two calls of 5 samples
    assert res.layers["1"].meta["calls"] == 2 and res.layers["1"].meta["samples"] == 10


def _brute_force(model, layer, batches):
    seen = []
    h = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: seen.append(o.detach().double()))
    for x in batches:
        model(x)
    h.remove()
    return seen


@pytest.mark.parametrize("channels_last", [False, True])
def test_moments_match_a_numpy_reference_over_many_batches(channels_last):
    torch.manual_seed(1)
    if channels_last:  # transformer-style [B, T, C]
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
        batches = [torch.randn(3, 7, 8) for _ in range(4)]
        layer, to_rows = "1", lambda a: a.reshape(-1, a.shape[-1])
    else:
        model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Conv2d(6, 5, 3))
        batches = [torch.randn(4, 2, 9, 9) for _ in range(4)]
        layer, to_rows = "1", lambda a: np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
    with Probe(model, stats=("moments",), thresholds=(0.0, 0.3)) as probe:
        for x in batches:
            model(x)
    got = probe.result().layers[layer].stats["moments"]
    rows = np.concatenate([to_rows(t.numpy()) for t in _brute_force(model, layer, batches)])  # [n, C]
    pc = got["per_channel"]
    np.testing.assert_allclose(pc["mean"], rows.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pc["std"], rows.std(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pc["min"], rows.min(0), rtol=1e-6)
    np.testing.assert_allclose(pc["max"], rows.max(0), rtol=1e-6)
    np.testing.assert_allclose(pc["activation_rate"][1], (rows > 0.3).mean(0), rtol=1e-12)
    np.testing.assert_allclose(pc["zero_fraction"], (rows == 0).mean(0), rtol=1e-12)
    assert got["count"] == rows.size
    np.testing.assert_allclose(got["std"], rows.std(), rtol=1e-5)


def test_hooks_are_removed_after_an_exception_and_the_failing_layer_is_named():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(RuntimeError) as info, Probe(model, stats=("moments",)) as probe:
        model(torch.randn(3, 4))
    assert probe.failed_layer == "2"
    assert any("layer '2'" in note for note in getattr(info.value, "__notes__", []))
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


class _Block(nn.Module):
    def __init__(self, fail_here):
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.fail_here = fail_here

    def forward(self, x):
        h = self.inner(x)
        if self.fail_here:
            raise ValueError("bad block")  # the block's own code, after its child returned
        return h


@pytest.mark.parametrize(("model", "expected"), [
    (nn.Sequential(_Block(False), _Block(True)), "1"),
    (nn.Sequential(_Block(False), nn.Sequential(nn.ReLU(), nn.Linear(3, 2))), "1.1"),
])
def test_the_failing_module_is_the_innermost_one_running(model, expected):
    """A container failing in its own code after a child returned is named, not the child; a leaf failing
    inside nested containers is named; inside an ``except`` clause of a probe attached without ``with``."""
    probe = Probe(model, stats=("moments",))
    probe.attach()
    try:
        model(torch.randn(3, 4))
    except (ValueError, RuntimeError):
        assert probe.failed_layer == expected
    else:
        raise AssertionError("the forward pass did not fail")
    finally:
        probe.detach()
    with pytest.raises((ValueError, RuntimeError)), probe:
        model(torch.randn(3, 4))
    assert probe.failed_layer == expected


def test_a_pass_that_succeeds_names_no_failing_module():
    model = nn.Sequential(_Block(False), _Block(True))
    probe = Probe(model, stats=("moments",))
    with pytest.raises(ValueError), probe:
        model(torch.randn(3, 4))
    assert probe.failed_layer == "1"
    model[1].fail_here = False
    with probe:
        model(torch.randn(3, 4))
    assert probe.failed_layer is None


def test_no_activation_survives_the_hook():
    refs = []

    class Keep(nn.Module):
        def forward(self, x):
            y = x * 2
            refs.append(weakref.ref(y))
            return y

    model = nn.Sequential(nn.Linear(4, 64), Keep(), nn.ReLU())
    with Probe(model, stats=("moments",)):
        for _ in range(3):
            model(torch.randn(32, 4))
    gc.collect()
    assert refs and all(r() is None for r in refs)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "train"])
def test_works_in_every_autograd_mode(mode):
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    ctx = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode)
    with Probe(model, stats=("moments",)) as probe:
        if ctx:
            with ctx():
                model(torch.randn(6, 4))
        else:
            model(torch.randn(6, 4)).sum().backward()  # the probe must not break the graph
            assert model[0].weight.grad is not None
    assert probe.result().layers["1"].meta["samples"] == 6


@pytest.mark.parametrize("backend", [None, "torch"])
def test_state_started_under_inference_mode_keeps_updating_outside_it(backend):
    """A first batch under inference_mode, then no_grad and a training step: the state must not be made
    of inference tensors (which cannot be updated in place outside inference_mode), and the statistics
    must be those of all three batches."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    xs = [torch.randn(2, 3, 6, 6) for _ in range(3)]
    stats = ("moments", "coverage", "histogram", "spectrum", "spatial", "covariance")
    with Probe(model, stats=stats, backend=backend) as probe:
        with torch.inference_mode():
            model(xs[0])
        with torch.no_grad():
            model(xs[1])
        model(xs[2]).sum().backward()
    layer = probe.result().layers["0"]
    assert layer.meta["samples"] == 6
    with torch.no_grad():
        acts = torch.cat([model[0](x) for x in xs]).double().numpy()  # [6, 4, 4, 4]
    np.testing.assert_allclose(layer.stats["moments"]["per_channel"]["mean"], acts.mean(axis=(0, 2, 3)), rtol=1e-6)


def test_identity_outputs_are_not_counted_as_new_tensors():
    model = nn.Sequential(nn.Linear(3, 3), nn.Identity(), nn.Dropout(0.5).eval())
    with Probe(model, stats=("moments",)) as probe:
        model(torch.randn(2, 3))
    assert probe.layer_names == ["0"]


def test_unknown_layer_pattern_and_statistic_are_clear_errors():
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(LayerSelectionError, match="Available layers: 0 \\(Linear\\)"):
        Probe(model, layers="conv*")
    with pytest.raises(ValueError, match="unknown statistic 'momentz'"):
        Probe(model, stats=("momentz",))


def test_layout_override():
    model = nn.Sequential(nn.Conv1d(3, 4, 1))
    with Probe(model, stats=("moments",), layouts={"0": "nsc:time"}) as probe:
        model(torch.randn(2, 3, 5))
    meta = probe.result().layers["0"].meta
    assert meta["channels_last"] and len(probe.result().layers["0"].stats["moments"]["per_channel"]["mean"]) == 5


def test_a_probe_inside_and_then_outside_inference_mode():
    # scratch buffers made during an inference_mode pass must stay usable in a later grad-mode pass
    from layerscope.kernels._torch import release_workspace

    release_workspace()
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU())
    for ctx in (torch.inference_mode, torch.no_grad, torch.enable_grad):
        with ctx(), Probe(model, stats=("moments", "spatial", "covariance"), backend="torch") as probe:
            model(torch.randn(3, 2, 8, 8))
        assert probe.result().layers["1"].meta["samples"] == 3


def _assert_same_state(got, want, rtol=0.0, atol=0.0, equal_nan=False, where="state"):
    """Nested state dicts alike: tensors, arrays and floats within rtol/atol, everything else equal."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            _assert_same_state(got[k], want[k], rtol, atol, equal_nan, f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), where
        for i, (x, y) in enumerate(zip(got, want, strict=True)):
            _assert_same_state(x, y, rtol, atol, equal_nan, f"{where}[{i}]")
    elif isinstance(want, torch.Tensor):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, equal_nan=equal_nan, msg=where)
    elif isinstance(want, np.ndarray):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=equal_nan, err_msg=where)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=rtol, abs=atol, nan_ok=equal_nan), where
    else:
        assert got == want, where


@pytest.mark.parametrize("backend", [None, "torch"])
def test_state_dict_is_a_snapshot(backend):
    """Accumulators update their state in place: a state dict handed out must not change with later
    batches (every statistic, both backends)."""
    from layerscope.stats import ACCUMULATORS

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with Probe(model, stats=tuple(ACCUMULATORS.names()), backend=backend) as probe:
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        state = probe.state_dict()
        kept = copy.deepcopy(state)
        model(torch.randn(2, 3, 8, 8) * 3 + 1).sum().backward()
    _assert_same_state(state, kept, equal_nan=True)


@pytest.mark.parametrize("backend", [None, "torch"])
def test_a_layer_fed_changing_shapes_dtypes_and_strides_matches_a_probe_without_plans(backend):
    """The hook's per-layer plan (view geometry, kernel) is made for one input shape, dtype and device: a
    stale one would reshape or reduce later batches wrongly. Alternate them and compare, bit for bit, with
    a probe whose plans are dropped before every batch, and closely with the torch backend on contiguous
    copies."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.ReLU())
    base = torch.randn(4, 3, 6, 6)
    batches = [base, base.double(), torch.randn(2, 3, 5, 7), base.transpose(2, 3), base[:, :, ::2],
               base.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), base * 2, base.double() - 1]
    stats = ("moments", "coverage", "histogram")
    with torch.inference_mode(), Probe(model, stats=stats, backend=backend) as probe:
        for x in batches:
            model(x)
    with torch.inference_mode(), Probe(model, stats=stats, backend=backend) as unplanned:
        for x in batches:
            for layer in unplanned._layers.values():
                layer.plan = None
            model(x)
    with Probe(model, stats=stats, backend="torch") as reference:
        for x in batches:
            model(x.contiguous())
    _assert_same_state(probe.state_dict()["0"], unplanned.state_dict()["0"])
    _assert_same_state(probe.state_dict()["0"], reference.state_dict()["0"], rtol=1e-6, atol=1e-9)  # float32 sums
    meta = probe.result().layers["0"].meta
    assert meta["samples"] == sum(x.shape[0] for x in batches) and meta["shape"] == [3, 6, 6]


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad", "grad"])
def test_accumulators_update_with_autograd_off(mode):
    """Every update runs with autograd off, whatever mode the forward pass runs in (leaving inference mode
    for the state's sake alone would turn grad mode back on), and out of inference mode."""
    from layerscope.stats import ACCUMULATORS

    seen = []

    class Spy:
        def __init__(self, **_):
            pass

        def update(self, view, reduced):
            seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))

    ACCUMULATORS.register("spy-grad-mode")(Spy)
    try:
        model = nn.Sequential(nn.Linear(3, 4))
        ctx = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad, "grad": contextlib.nullcontext}
        with Probe(model, stats=("spy-grad-mode",)), ctx[mode]():
            model(torch.randn(2, 3))
    finally:
        ACCUMULATORS._items.pop("spy-grad-mode")
    assert seen == [(False, False)]
