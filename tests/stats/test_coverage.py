"""NeuronCoverage: hand-computed cases from the published definitions, a brute-force NumPy reference,
exact merge of random splits, state round-trip and failure paths."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.stats import ACCUMULATORS
from layerscope.stats.coverage import NeuronCoverage

DENSE = Layout(-1, Axis.NONE)
CONV = Layout(1, Axis.SPACE)
TAUS = (0.0, 0.25, 0.5, 0.75)


def feed(acc: NeuronCoverage, x: torch.Tensor, layout: Layout = DENSE) -> NeuronCoverage:
    view = make_view(x, layout)
    acc.update(view, channel_reduce(view, (0.0,)))
    return acc


def dense(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# -- hand-computed cases ------------------------------------------------------------------------------
def test_registered_and_ignores_unknown_options() -> None:
    acc = ACCUMULATORS.get("coverage")(thresholds=(0.0, 1.0), bins=64, whatever="x")
    assert isinstance(acc, NeuronCoverage)
    assert acc.coverage_thresholds == TAUS and acc.top_k == 2 and acc.kmnc_sections == 100


def test_nc_three_neurons_two_inputs() -> None:
    # input 1: [0.1, 0.5, 2.0] → min 0.1, max 2.0 → scaled [0, 0.4/1.9 = 0.2105, 1]
    # input 2: [0.3, -1.0, 1.0] → min −1, max 1 → scaled [0.65, 0, 1]
    acc = feed(NeuronCoverage(), dense([[0.1, 0.5, 2.0], [0.3, -1.0, 1.0]]))
    expected = [
        [True, True, True],  # τ = 0: n0 (0.65), n1 (0.21), n2
        [True, False, True],  # τ = 0.25: n0 (0.65), n2
        [True, False, True],  # τ = 0.5
        [False, False, True],  # τ = 0.75: n2 only
    ]
    assert acc.nc_hits.tolist() == expected
    assert acc.samples == 2


def test_nc_threshold_is_strict_and_equal_neurons_cover_nothing() -> None:
    # [0, 1, 2] scales to [0, 0.5, 1]: at τ = 0.5 only n2 is covered (> τ, not ≥ τ)
    acc = feed(NeuronCoverage(coverage_thresholds=(0.5,)), dense([[0.0, 1.0, 2.0]]))
    assert acc.nc_hits.tolist() == [[False, False, True]]
    # all neurons equal: max − min = 0 → covers nothing, even at τ = −1 (DeepXplore's 0/0 is NaN)
    acc = feed(NeuronCoverage(coverage_thresholds=(-1.0, 0.0)), dense([[3.0, 3.0, 3.0]]))
    assert not acc.nc_hits.any()


def test_nc_conv_neuron_is_channel_mean_over_positions() -> None:
    # 1 input, 3 channels, 2×2 positions. Means: c0 = (0+0+0+4)/4 = 1, c1 = 2, c2 = 0.
    # Scaled over channel means: [0.5, 1, 0]. (c0's single 4 is the largest value but does not matter.)
    x = torch.tensor([[[[0.0, 0.0], [0.0, 4.0]], [[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    acc = feed(NeuronCoverage(coverage_thresholds=(0.25, 0.5)), x, CONV)
    assert acc.nc_hits.tolist() == [[True, True, False], [False, True, False]]
    assert acc.low.tolist() == [1.0, 2.0, 0.0] and acc.high.tolist() == [1.0, 2.0, 0.0]


def test_nc_channels_last_sequence_layer() -> None:
    # [N=1, T=2, C=3] transformer-style: neuron = mean over T → [2, 0, 1] → scaled [1, 0, 0.5]
    x = torch.tensor([[[1.0, 0.0, 1.0], [3.0, 0.0, 1.0]]])
    acc = feed(NeuronCoverage(coverage_thresholds=(0.4,)), x, Layout(-1, Axis.TIME))
    assert acc.nc_hits.tolist() == [[True, False, True]]


def test_tknc_top_k_with_inclusive_ties() -> None:
    # k = 2: input 1 [0.1, 0.5, 2.0] → {n1, n2}; input 2 [0.3, −1, 1] → {n0, n2}
    acc = feed(NeuronCoverage(top_k=2), dense([[0.1, 0.5, 2.0, -5.0], [0.3, -1.0, 1.0, -5.0]]))
    assert acc.topk_hits.tolist() == [True, True, True, False]
    # k = 1, ties: [1, 3, 3] → both 3s are "the" top neuron
    acc = feed(NeuronCoverage(top_k=1), dense([[1.0, 3.0, 3.0]]))
    assert acc.topk_hits.tolist() == [False, True, True]
    # k larger than the layer: every neuron
    acc = feed(NeuronCoverage(top_k=5), dense([[1.0, 2.0]]))
    assert acc.topk_hits.tolist() == [True, True]


def test_kmnc_nbc_snac_sections_and_corners() -> None:
    # ranges [0, 1] for n0..n2, k = 4 sections [0, .25) [.25, .5) [.5, .75) [.75, 1]
    acc = NeuronCoverage(ranges=([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]), kmnc_sections=4)
    feed(acc, dense([[0.0, 0.25, 1.0], [0.74, 1.5, -0.5], [0.1, 0.5, 0.99]]))
    assert acc.kmnc_hits.int().tolist() == [
        [1, 0, 1, 0],  # n0: 0.0 → s0, 0.74 → s2, 0.1 → s0
        [0, 1, 1, 0],  # n1: 0.25 → s1 (an edge opens its section), 1.5 → none, 0.5 → s2
        [0, 0, 0, 1],  # n2: 1.0 == high → s3, −0.5 → none, 0.99 → s3
    ]
    assert acc.lower_hits.tolist() == [False, False, True]  # n2: −0.5 < 0
    assert acc.upper_hits.tolist() == [False, True, False]  # n1: 1.5 > 1


def test_degenerate_and_missing_ranges() -> None:
    # n0: low == high == 1 → no section, but corners; n1: NaN range → nothing at all; n2: inverted
    acc = NeuronCoverage(ranges=([1.0, float("nan"), 2.0], [1.0, 5.0, 1.0]), kmnc_sections=2)
    feed(acc, dense([[1.0, 2.0, 1.5], [0.0, -9.0, 9.0], [2.0, 9.0, -9.0]]))
    assert not acc.kmnc_hits.any()
    assert acc.lower_hits.tolist() == [True, False, False]
    assert acc.upper_hits.tolist() == [True, False, False]


def test_ranges_accept_json_none() -> None:
    acc = NeuronCoverage(ranges=([None, 0.0], [None, 1.0]), kmnc_sections=1)
    feed(acc, dense([[5.0, 0.5]]))
    assert acc.kmnc_hits.tolist() == [[False], [True]] and not acc.upper_hits[0]


def test_nan_sample_means_are_skipped() -> None:
    # conv, 2 inputs × 3 channels × 2 positions; input 1's channel 0 is all NaN (no finite position)
    nan = float("nan")
    x = torch.tensor([[[nan, nan], [1.0, 1.0], [3.0, 3.0]], [[0.0, 2.0], [5.0, 5.0], [0.0, 0.0]]])
    acc = feed(NeuronCoverage(coverage_thresholds=(0.0,), top_k=1), x, Layout(1, Axis.TIME))
    # input 1: neurons [NaN, 1, 3] → scaled over the finite ones [NaN, 0, 1]; top-1 = n2
    # input 2: neurons [1, 5, 0] → scaled [0.2, 1, 0]; top-1 = n1
    assert acc.nc_hits.tolist() == [[True, True, True]]
    assert acc.topk_hits.tolist() == [False, True, True]
    assert acc.skipped.tolist() == [1, 0, 0]
    assert acc.low.tolist() == [1.0, 1.0, 0.0] and acc.high.tolist() == [1.0, 5.0, 3.0]


def test_partial_nan_positions_use_the_finite_mean() -> None:
    x = torch.tensor([[[float("nan"), 4.0], [1.0, 1.0]]])  # channel 0's neuron = 4 (finite positions)
    acc = feed(NeuronCoverage(), x, Layout(1, Axis.TIME))
    assert acc.high.tolist() == [4.0, 1.0]


def test_profile_then_measure_on_the_same_data() -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(40, 6, 5)))
    profile = feed(NeuronCoverage(), x, Layout(1, Axis.TIME))
    low, high = profile.observed_ranges()
    measure = feed(NeuronCoverage(ranges=(low, high), kmnc_sections=10), x, Layout(1, Axis.TIME))
    assert not measure.lower_hits.any() and not measure.upper_hits.any()  # nothing beyond the profile
    assert measure.kmnc_hits[:, 0].all() and measure.kmnc_hits[:, -1].all()  # the min and the max


# -- brute-force NumPy reference -------------------------------------------------------------------
def neuron_values(x: np.ndarray) -> np.ndarray:
    """[N, C, S] → [N, C] mean of the finite positions (NaN where none)."""
    out = np.full(x.shape[:2], np.nan)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            finite = x[n, c][np.isfinite(x[n, c])]
            if finite.size:
                out[n, c] = finite.astype(np.float64).sum() / finite.size
    return out


def reference(phi: np.ndarray, taus, k_top: int, low=None, high=None, sections: int = 0) -> dict:
    n, c = phi.shape
    nc = np.zeros((len(taus), c), bool)
    topk = np.zeros(c, bool)
    kmnc = np.zeros((c, sections), bool)
    lower, upper = np.zeros(c, bool), np.zeros(c, bool)
    for i in range(n):
        row = phi[i]
        fin = ~np.isnan(row)
        if not fin.any():
            continue
        lo, hi = row[fin].min(), row[fin].max()
        for t, tau in enumerate(taus):
            for j in range(c):
                if fin[j] and hi > lo and (row[j] - lo) / (hi - lo) > tau:
                    nc[t, j] = True
        ordered = sorted(row[fin], reverse=True)
        kth = ordered[min(k_top, len(ordered)) - 1]
        topk |= fin & (np.nan_to_num(row, nan=-np.inf) >= kth)
        if low is None:
            continue
        for j in range(c):
            v = row[j]
            if not fin[j] or not (np.isfinite(low[j]) and np.isfinite(high[j]) and low[j] <= high[j]):
                continue
            lower[j] |= v < low[j]
            upper[j] |= v > high[j]
            if low[j] < high[j] and low[j] <= v <= high[j]:
                edges = np.linspace(low[j], high[j], sections + 1)
                s = min(int(np.searchsorted(edges, v, side="right")) - 1, sections - 1)
                kmnc[j, s] = True
    return {"nc_hits": nc, "topk_hits": topk, "kmnc_hits": kmnc, "lower_hits": lower, "upper_hits": upper}


def random_batch(rng: np.random.Generator, n: int, c: int, s: int, nan_rate: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, c, s)) * rng.uniform(0.1, 3.0, size=(1, c, 1)) + rng.normal(size=(1, c, 1))
    if nan_rate:
        x[rng.random(x.shape) < nan_rate] = np.nan
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_bruteforce_reference(seed: int, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(seed)
    prof = random_batch(rng, 30, 7, 4).astype(np.float32 if dtype == torch.float32 else np.float64)
    x = random_batch(rng, 25, 7, 4, nan_rate=0.3).astype(prof.dtype)
    x[0, 2] = np.nan  # a whole neuron missing in one input
    phi_prof, phi = neuron_values(prof), neuron_values(x)
    low, high = np.nanmin(phi_prof, axis=0), np.nanmax(phi_prof, axis=0)
    low[3] = high[3]  # one degenerate range
    acc = NeuronCoverage(top_k=3, kmnc_sections=8, ranges=(low.tolist(), high.tolist()))
    for part in np.array_split(x, 4):
        feed(acc, torch.from_numpy(part).to(dtype), Layout(1, Axis.TIME))
    ref = reference(phi, TAUS, 3, low, high, 8)
    for name, expected in ref.items():
        np.testing.assert_array_equal(getattr(acc, name).numpy(), expected, err_msg=name)
    np.testing.assert_allclose(acc.low.numpy(), np.nanmin(phi, axis=0), rtol=1e-6)
    np.testing.assert_allclose(acc.high.numpy(), np.nanmax(phi, axis=0), rtol=1e-6)
    assert acc.skipped.tolist() == np.isnan(phi).sum(axis=0).tolist()


# -- merge and state ---------------------------------------------------------------------------------
def states_equal(a: NeuronCoverage, b: NeuronCoverage) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, va in sa.items():
        vb = sb[key]
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), key
        elif key == "ranges" and va is not None:
            assert all(torch.equal(x.nan_to_num(7.0), y.nan_to_num(7.0)) for x, y in zip(va, vb, strict=True))
        else:
            assert va == vb, key


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 24),
    c=st.integers(1, 6),
    cuts=st.lists(st.integers(0, 24), max_size=4),
    with_ranges=st.booleans(),
)
def test_merge_of_random_splits_equals_one_pass(seed, n, c, cuts, with_ranges) -> None:
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(random_batch(rng, n, c, 3, nan_rate=0.2))
    opts = {"top_k": 2, "kmnc_sections": 5}
    if with_ranges:
        opts["ranges"] = (rng.normal(size=c) - 1, rng.normal(size=c) + 1)
    view = make_view(x, Layout(1, Axis.TIME))
    reduced = channel_reduce(view, (0.0,))
    whole = NeuronCoverage(**opts)
    whole.update(view, reduced)
    # The parts see the very same neuron values (rows of one reduction): this tests the accumulator's
    # merge, independent of whether a backend's per-sample mean depends on the batch it came in.
    merged = NeuronCoverage(**opts)
    bounds = sorted({0, n, *(min(b, n) for b in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        part = NeuronCoverage(**opts)
        if hi > lo:
            part_view = make_view(x[lo:hi], Layout(1, Axis.TIME))
            part.update(part_view, replace(reduced, sample_mean=reduced.sample_mean[lo:hi]))
        merged.merge(part)
    states_equal(merged, whole)


def test_state_dict_round_trip_then_continue() -> None:
    rng = np.random.default_rng(5)
    ranges = (rng.normal(size=4) - 1, rng.normal(size=4) + 1)
    a = feed(NeuronCoverage(ranges=ranges, kmnc_sections=7), torch.from_numpy(rng.normal(size=(9, 4))))
    b = NeuronCoverage.from_state_dict(a.state_dict())
    states_equal(a, b)
    more = torch.from_numpy(rng.normal(size=(6, 4)) * 3)
    states_equal(feed(a, more), feed(b, more))


def test_empty_state_round_trip_and_merge() -> None:
    empty = NeuronCoverage.from_state_dict(NeuronCoverage().state_dict())
    assert empty.nc_hits is None and empty.samples == 0
    full = feed(NeuronCoverage(), dense([[1.0, 2.0]]))
    empty.merge(full)
    states_equal(empty, full)
    full.merge(NeuronCoverage())
    assert full.samples == 1


# -- failure paths -------------------------------------------------------------------------------
def test_channel_count_change_is_an_error() -> None:
    acc = feed(NeuronCoverage(), dense([[1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="neuron count changed from 3 to 2"):
        feed(acc, dense([[1.0, 2.0]]))


def test_ranges_of_the_wrong_length_name_both_sizes() -> None:
    with pytest.raises(ValueError, match="ranges have 2 neurons but the layer has 3"):
        feed(NeuronCoverage(ranges=([0, 0], [1, 1])), dense([[1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="low has 2 values but high has 3"):
        NeuronCoverage(ranges=([0, 0], [1, 1, 1]))


def test_merge_with_different_options_is_an_error() -> None:
    a = feed(NeuronCoverage(top_k=1), dense([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="different options"):
        a.merge(feed(NeuronCoverage(top_k=2), dense([[1.0, 2.0]])))
    r = feed(NeuronCoverage(ranges=([0, 0], [1, 1])), dense([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="reference ranges"):
        r.merge(feed(NeuronCoverage(ranges=([0, 0], [1, 2])), dense([[1.0, 2.0]])))


@pytest.mark.parametrize("opts", [{"top_k": 0}, {"kmnc_sections": 0}])
def test_invalid_options(opts) -> None:
    with pytest.raises(ValueError, match="must be ≥ 1"):
        NeuronCoverage(**opts)


def test_observed_ranges_before_data_is_an_error() -> None:
    with pytest.raises(ValueError, match="profiling pass"):
        NeuronCoverage().observed_ranges()


def test_no_activation_kept_and_state_is_bounded() -> None:
    acc = NeuronCoverage(ranges=([0.0] * 4, [1.0] * 4), kmnc_sections=3)
    for _ in range(3):
        feed(acc, torch.randn(50, 4, 8), Layout(1, Axis.TIME))
    sizes = {k: tuple(v.shape) for k, v in acc.state_dict().items() if isinstance(v, torch.Tensor)}
    assert sizes == {"nc_hits": (4, 4), "topk_hits": (4,), "low": (4,), "high": (4,), "skipped": (4,),
                     "kmnc_hits": (4, 3), "lower_hits": (4,), "upper_hits": (4,)}
    assert math.isfinite(float(acc.low.min()))


def test_state_dict_is_a_snapshot_and_from_state_dict_owns_its_state() -> None:
    # CPU state is updated in place (native kernel): a snapshot must not follow later updates
    acc = feed(NeuronCoverage(ranges=([0.0] * 3, [1.0] * 3), kmnc_sections=2), dense([[0.1, 0.2, 0.3]]))
    snap = acc.state_dict()
    frozen = {k: v.clone() for k, v in snap.items() if isinstance(v, torch.Tensor)}
    copy = NeuronCoverage.from_state_dict(snap)
    feed(acc, dense([[-5.0, 9.0, float("nan")], [0.9, 0.5, 0.0]]))
    feed(copy, dense([[7.0, -7.0, 0.0]]))
    assert all(torch.equal(snap[k], v) for k, v in frozen.items())
    assert acc.skipped.tolist() == [0, 0, 1] and copy.skipped.tolist() == [0, 0, 0]


@pytest.mark.parametrize("backend", [None, "torch"])
def test_an_empty_batch_covers_nothing_and_counts_no_sample(backend) -> None:
    acc = NeuronCoverage(coverage_thresholds=(0.0,), top_k=1, backend=backend)
    feed(acc, dense([[0.0, 1.0], [2.0, 0.5]]))
    before = acc.state_dict()
    feed(acc, torch.zeros(0, 2))
    after = acc.state_dict()
    assert acc.samples == 2
    for key in ("nc_hits", "topk_hits", "low", "high", "skipped"):
        assert torch.equal(after[key], before[key]), key
