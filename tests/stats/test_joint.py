"""The joint native update of a layer's spectrum, spatial and covariance (stats/_joint.py): the same state,
bit for bit, as each accumulator's own update, across plan changes, non-finite batches, merges and
replaced accumulators; and against SciPy / NumPy float64 references."""

import copy
import pickle

import numpy as np
import pytest
import scipy.signal
import torch
from torch import nn

import layerscope._probe as probe_module
from layerscope._probe import Probe
from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.kernels._native_accumulate import available
from layerscope.stats import _joint
from layerscope.stats.covariance import ChannelCovariance
from layerscope.stats.spatial import SpatialDensity
from layerscope.stats.spectrum import ChannelSpectrum

from ._same import assert_same_state

pytestmark = pytest.mark.skipif(not available(), reason="native extension not built")

STATS = ("moments", "spectrum", "spatial", "covariance", "connectivity")


class Seq(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.conv = nn.Conv1d(2, 16, 5, padding=2).to(dtype)
        self.mix = nn.Linear(16, 32).to(dtype)
        self.head = nn.Linear(32, 5).to(dtype)

    def forward(self, x):
        h = self.conv(x)  # (N, 16, T): channels first, time
        h = self.mix(h.transpose(1, 2))  # (N, T, 32): channels last
        return self.head(h.mean(1))  # (N, 5)


def _batches(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(n, 2, t, generator=g, dtype=dtype) for n, t in
           ((40, 96), (40, 96), (40, 96), (17, 96), (40, 96), (40, 64), (40, 96), (40, 96))]
    out[2] = out[2].clone()
    out[2][3, 1, 7] = float("nan")  # a non-finite batch: the joint call declines, each update handles it
    return out


def _run(model, batches, joint, **options):
    saved = probe_module.plan_joint
    calls = []
    if not joint:
        probe_module.plan_joint = lambda *a: None
    original_run = _joint.JointUpdate.run

    def counted(self, view, reduced):
        done = original_run(self, view, reduced)
        calls.append(done)
        return done

    _joint.JointUpdate.run = counted
    try:
        probe = Probe(model, stats=STATS, **options)
        with torch.inference_mode(), probe:
            for x in batches:
                model(x)
    finally:
        probe_module.plan_joint = saved
        _joint.JointUpdate.run = original_run
    return probe, calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", [{}, {"spatial_samples": None, "covariance_samples": 4, "spectrum_samples": 16}])
def test_joint_update_equals_separate_updates(dtype, options):
    torch.manual_seed(0)
    model = Seq(dtype)
    batches = _batches(dtype)
    joined, calls = _run(model, batches, True, **options)
    separate, none = _run(model, batches, False, **options)
    assert sum(calls) >= 3 * 2 and not none  # the joint call ran on most layer-batches
    assert not all(calls)  # and declined on the non-finite batch and the shape changes
    assert_same_state(joined.state_dict(), separate.state_dict())
    assert {n: l.joint is not None for n, l in joined._layers.items()} == {"conv": True, "mix": True, "head": True}


def test_backend_torch_and_stream_spectrum_are_not_joined():
    model = Seq(torch.float32)
    batches = _batches(torch.float32)[:2]
    probe, calls = _run(model, batches, True, backend="torch")
    assert not calls and all(layer.joint is None for layer in probe._layers.values())
    probe, _ = _run(model, batches, True, stream_spectrum=True)
    for layer in probe._layers.values():  # the spectrum keeps its own update; spatial + covariance are joined
        assert layer.joint is not None and layer.joint.spectrum is None


def test_merged_and_replaced_state_declines_then_plans_again():
    """A merge replaces the accumulators' state tensors, a replaced accumulator is another object: the joint
    plan must not write into the old ones (it declines, the updates run, and it is planned again)."""
    torch.manual_seed(1)
    model = Seq(torch.float32)
    batches = [b for b in _batches(torch.float32) if b.shape == (40, 2, 96) and b.isfinite().all()]
    results = []
    for joint in (True, False):
        saved = probe_module.plan_joint
        if not joint:
            probe_module.plan_joint = lambda *a: None
        try:
            probe = Probe(model, stats=STATS)
            other = Probe(model, stats=STATS)
            with torch.inference_mode():
                with other:
                    model(batches[0])
                with probe:
                    for i, x in enumerate(batches):
                        model(x)
                        if i == 1:
                            for name, layer in probe._layers.items():
                                for stat in ("spectrum", "spatial", "covariance"):
                                    layer.accumulators[stat].merge(other._layers[name].accumulators[stat])
                        if i == 2:
                            layer = probe._layers["mix"]
                            cls = type(layer.accumulators["covariance"])
                            layer.accumulators["covariance"] = cls.from_state_dict(
                                layer.accumulators["covariance"].state_dict())
        finally:
            probe_module.plan_joint = saved
        results.append(probe.state_dict())
    assert_same_state(*results)


def test_joint_path_matches_scipy_and_numpy():
    """Welch PSD against scipy.signal.welch and the covariance against numpy.cov (float64) on the samples
    the budgets pick, with the joint call doing the work."""
    torch.manual_seed(2)
    model = Seq(torch.float64)
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(32, 2, 128, generator=g, dtype=torch.float64) for _ in range(4)]
    probe, calls = _run(model, batches, True)
    assert sum(calls) == 3 * 3  # every layer from the second batch on
    acts = []
    with torch.inference_mode():
        for x in batches:
            acts.append(model.conv(x)[::4].numpy())  # 32 samples, budget 8: x[::4]
    act = np.concatenate(acts)  # (32, 16, 128)
    spectrum = probe._layers["conv"].accumulators["spectrum"]
    _, ref = scipy.signal.welch(act, nperseg=64, axis=-1)
    np.testing.assert_allclose(spectrum.psd().numpy(), ref.mean(0), rtol=1e-10)
    rows = act.transpose(0, 2, 1).reshape(-1, 16)
    cov = probe._layers["conv"].accumulators["covariance"]
    np.testing.assert_allclose(cov.covariance().numpy(), np.cov(rows, rowvar=False, bias=True), rtol=1e-9,
                               atol=1e-12)
    spatial = probe._layers["conv"].accumulators["spatial"]
    cells = (act ** 2).reshape(32, 16, 8, 16).sum(axis=(0, 3))
    np.testing.assert_allclose(spatial.energy_sum.numpy(), cells, rtol=1e-12)


def test_joint_update_does_not_depend_on_the_thread_count():
    model = Seq(torch.float32)
    batches = _batches(torch.float32)
    threads = torch.get_num_threads()
    states = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            probe, calls = _run(model, batches, True)
            assert any(calls)
            states.append(probe.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert_same_state(*states)


@pytest.mark.parametrize("cls", [ChannelSpectrum, SpatialDensity, ChannelCovariance])
def test_copy_and_pickle_leave_the_per_batch_plans_out(cls):
    """The per-batch native plans (ctypes pointers) are left out of copies and pickles, and rebuilt on
    the next batch: the copy goes on exactly as the original does."""
    x = torch.randn(16, 20, 64)
    acc = cls()

    def feed(a):
        view = make_view(x, Layout(1, Axis.TIME))
        a.update(view, channel_reduce(view, getattr(a, "thresholds", (0.0,)), "torch"))

    for _ in range(3):
        feed(acc)
    twins = (copy.deepcopy(acc), pickle.loads(pickle.dumps(acc)))
    feed(acc)
    for twin in twins:
        assert twin._fast is None  # left out: rebuilt on the next batch
        feed(twin)
        for key, value in twin.state_dict().items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, acc.state_dict()[key], rtol=1e-12, atol=0)
            else:
                assert value == acc.state_dict()[key], key
