"""The direct native update of a layer's moments, coverage and histogram (stats/_direct.py): the same state,
bit for bit, as the general path (reduction, then each accumulator's update), across dtypes, layouts,
batch-size changes, non-finite batches, histogram growth, reference ranges, merges and replaced
accumulators; and against float64 NumPy references."""

import numpy as np
import pytest
import torch
from torch import nn

from layerscope._probe import Probe
from layerscope.kernels._native_accumulate import available
from layerscope.stats import _direct

from ._same import assert_same_state

pytestmark = pytest.mark.skipif(not available() or _direct._lib_fn() is None, reason="native extension not built")


class Net(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.conv = nn.Conv1d(3, 24, 5, padding=2).to(dtype)  # (N, 24, T): channels first
        self.act = nn.ReLU()
        self.mix = nn.Linear(24, 20).to(dtype)  # (N, T, 20): channels last
        self.head = nn.Linear(20, 6).to(dtype)  # (N, 6)

    def forward(self, x):
        h = self.act(self.conv(x))
        h = self.mix(h.transpose(1, 2))
        return self.head(h.mean(1))


def _batches(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    # scales: a wider range now and then (the histogram grows its grid: the call hands it back), sizes: a
    # change of batch size (the plan declines, the general path runs and plans again)
    specs = ((32, 48, 1.0), (32, 48, 1.0), (32, 48, 1.02), (32, 48, 4.0), (9, 48, 1.0), (32, 48, 1.0),
             (32, 48, 1.0), (32, 48, 40.0), (32, 48, 1.0), (32, 48, 1.0))
    out = [(torch.randn(n, 3, t, generator=g) * s).to(dtype) for n, t, s in specs]
    out[5] = out[5].clone()
    out[5][2, 1, 7] = float("nan")  # non-finite values: counted by the moments, skipped by the coverage
    out[6] = out[6].clone()
    out[6][0, 0, 0] = float("inf")
    return out


def _run(model, batches, direct, **options):
    """The probe's state after ``batches``; with ``direct``, also what each DirectUpdate.run returned and,
    for each batch the call handed back to the histogram, whether its grid changed."""
    runs, handed = [], []
    original_run, original_replan = _direct.DirectUpdate.run, _direct.DirectUpdate._replan_histogram

    def run(self, tensor):
        done = original_run(self, tensor)
        runs.append(done)
        return done

    def replan(self):  # called after the histogram took a batch that the call handed back
        handed.append(tuple(self.plan[_direct._E:_direct._BINS + 1]) != self.histogram.fused_grid())
        return original_replan(self)

    _direct.DirectUpdate.run = run
    _direct.DirectUpdate._replan_histogram = replan
    try:
        probe = Probe(model, **options)
        probe._direct = direct
        with torch.inference_mode(), probe:
            for x in batches:
                model(x)
    finally:
        _direct.DirectUpdate.run = original_run
        _direct.DirectUpdate._replan_histogram = original_replan
    return probe, runs, handed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_direct_update_equals_the_general_path(dtype):
    torch.manual_seed(0)
    model = Net(dtype)
    batches = _batches(dtype)
    direct, runs, handed = _run(model, batches, True)
    general, none, _ = _run(model, batches, False)
    assert not none
    # 4 layers: from the second batch on, every layer-batch but the size change (which plans again) is direct
    assert sum(runs) >= 4 * 7
    assert not all(runs)  # the batch of 9 declined
    # growth handed back from the call: onto a new grid (counted again), and within the grid (its counts kept)
    assert any(handed) and not all(handed)
    assert_same_state(direct.state_dict(), general.state_dict())
    assert all(layer.direct is not None for layer in direct._layers.values())


def test_direct_update_with_reference_ranges():
    """KMNC / NBC / SNAC state (coverage with the profile of an earlier pass) is updated by the call too."""
    torch.manual_seed(1)
    model = Net(torch.float32)
    profile, _, _ = _run(model, _batches(torch.float32, seed=1)[:3], True)
    reference = profile.result()
    batches = _batches(torch.float32, seed=2)
    direct, runs, _ = _run(model, batches, True, reference=reference, kmnc_sections=7)
    general, _, _ = _run(model, batches, False, reference=reference, kmnc_sections=7)
    assert sum(runs) >= 4 * 7
    cov = direct._layers["conv"].accumulators["coverage"]
    assert cov.ranges is not None and bool(cov.kmnc_hits.any()) and bool(cov.upper_hits.any())
    assert_same_state(direct.state_dict(), general.state_dict())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_direct_update_equals_the_general_path_on_any_thread_count(threads):
    """The call passes the thread count on to the reduction and the coverage (a batch of 48 samples of
    512 neurons splits its coverage update over the threads)."""
    g = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Linear(16, 512), nn.ReLU())
    batches = [torch.randn(48, 16, generator=g) * (1 + i % 3) for i in range(5)]
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        direct, runs, _ = _run(model, batches, True)
        general, _, _ = _run(model, batches, False)
    finally:
        torch.set_num_threads(saved)
    assert sum(runs) == 2 * 4
    assert_same_state(direct.state_dict(), general.state_dict())


def test_merged_and_replaced_state_declines_then_plans_again():
    """A merge may replace the accumulators' state tensors (the histogram's regrid does), a restored
    accumulator is another object: the plan must not write into the old ones. It declines, the general
    path runs, and the next batch is direct again."""
    torch.manual_seed(3)
    model = Net(torch.float32)
    batches = [b for b in _batches(torch.float32, seed=3) if b.shape[0] == 32 and b.isfinite().all()]
    other = Probe(model)
    with torch.inference_mode(), other:
        model(batches[0] * 100)  # a wider range: merging it regrids the histogram
    results = []
    for direct in (True, False):
        probe = Probe(model)
        probe._direct = direct
        with torch.inference_mode(), probe:
            for i, x in enumerate(batches):
                model(x)
                if i == 1:
                    for name, layer in probe._layers.items():
                        for acc_name, acc in layer.accumulators.items():
                            acc.merge(other._layers[name].accumulators[acc_name])
                if i == 2:
                    layer = probe._layers["mix"]
                    for acc_name, acc in list(layer.accumulators.items()):
                        layer.accumulators[acc_name] = type(acc).from_state_dict(acc.state_dict())
        if direct:
            assert all(layer.direct is not None for layer in probe._layers.values())
            mix = probe._layers["mix"]
            assert mix.direct.moments is mix.accumulators["moments"]  # planned again on the restored objects
        results.append(probe.state_dict())
    assert_same_state(*results)


def test_direct_path_matches_numpy():
    """Moments, exact histogram counts and NC coverage against float64 NumPy over the same activations,
    with the direct call doing the work on every batch after the first."""
    torch.manual_seed(4)
    model = Net(torch.float64)
    batches = [torch.randn(16, 3, 40, dtype=torch.float64) * (1 + i) for i in range(5)]
    probe, runs, _ = _run(model, batches, True, coverage_thresholds=(0.25, 0.75))
    assert sum(runs) == 4 * 4
    with torch.inference_mode():
        acts = np.concatenate([model.act(model.conv(x)).numpy() for x in batches])  # (80, 24, 40)
    layer = probe._layers["act"]
    mom = layer.accumulators["moments"]
    per_channel = acts.transpose(1, 0, 2).reshape(24, -1)
    np.testing.assert_allclose(mom.mean.numpy(), per_channel.mean(1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mom.variance.numpy(), per_channel.var(1), rtol=1e-10, atol=1e-15)
    np.testing.assert_array_equal(mom.zeros.numpy(), (per_channel == 0).sum(1))
    np.testing.assert_array_equal(mom.above.numpy()[0], (per_channel > 0).sum(1))
    hist = layer.accumulators["histogram"]
    assert hist.min == acts.min() and hist.max == acts.max()
    bins = np.floor(acts.ravel() / 2.0 ** hist.exponent).astype(np.int64) - hist.offset
    np.testing.assert_array_equal(hist.counts.numpy(), np.bincount(bins, minlength=hist.bins))
    cov = layer.accumulators["coverage"]
    means = acts.mean(2)  # neuron values [N, C]
    lo, hi = means.min(1, keepdims=True), means.max(1, keepdims=True)
    scaled = (means - lo) / np.where(hi > lo, hi - lo, 1.0)  # per-sample min-max scaling
    for k, tau in enumerate((0.25, 0.75)):
        np.testing.assert_array_equal(cov.nc_hits.numpy()[k], (scaled > tau).any(0))
    np.testing.assert_allclose(cov.low.numpy(), means.min(0), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(cov.high.numpy(), means.max(0), rtol=1e-14, atol=1e-16)


def test_other_statistics_and_the_torch_backend_take_the_general_path():
    model = Net(torch.float32)
    batches = _batches(torch.float32)[:3]
    probe, runs, _ = _run(model, batches, True, backend="torch")
    assert not runs and all(layer.direct is None for layer in probe._layers.values())
    probe, runs, _ = _run(model, batches, True, stats=("moments", "spectrum"))
    assert not runs and all(layer.direct is None for layer in probe._layers.values())
    probe, runs, _ = _run(model, batches, True, stats=("moments",))  # a subset of the three is direct
    assert sum(runs) == 4 * 2


def test_a_failed_call_takes_the_general_path_or_raises():
    """-1 (the reduction failed, nothing written): the batch takes the general path; -2 (the coverage
    update failed after the reduction): the forward pass raises, naming what may be partly updated."""
    model = Net(torch.float32)
    batches = _batches(torch.float32)[:3]
    probe = Probe(model)
    with torch.inference_mode(), probe:
        model(batches[0])
        model(batches[1])
        for layer in probe._layers.values():
            layer.direct.fn = lambda *args: -1
        model(batches[2])
    general, _, _ = _run(model, batches, False)
    assert_same_state(probe.state_dict(), general.state_dict())
    for layer in probe._layers.values():
        layer.direct.fn = lambda *args: -2
    with torch.inference_mode(), probe, pytest.raises(RuntimeError, match="coverage state may hold part"):
        model(batches[0])


def test_unbatched_outputs_count_one_sample_per_call():
    """A module called without a batch dimension ([C] out) is one sample per call, as in the general path."""
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh())
    g = torch.Generator().manual_seed(6)
    batches = [torch.randn(5, generator=g) for _ in range(4)]
    direct, runs, _ = _run(model, batches, True)
    general, _, _ = _run(model, batches, False)
    assert sum(runs) == 2 * 3
    assert_same_state(direct.state_dict(), general.state_dict())
    assert direct._layers["1"].samples == 4 and direct._layers["1"].accumulators["coverage"].samples == 4
