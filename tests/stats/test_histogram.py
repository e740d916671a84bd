"""AdaptiveHistogram: hand-computed grids, counts preserved across re-binning, numpy.histogram on the
final grid, exact merge of random splits, quantiles, adversarial data and the kernel switch."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerscope import kernels
from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.stats import ACCUMULATORS
from layerscope.stats.histogram import AdaptiveHistogram

NCS = Layout(1, Axis.TIME)


def feed(h: AdaptiveHistogram, x) -> AdaptiveHistogram:
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    if x.dim() == 1:
        x = x.reshape(1, 1, -1)  # one sample, one channel
    view = make_view(x, NCS)
    h.update(view, channel_reduce(view, ()))
    return h


def grid(h: AdaptiveHistogram) -> tuple[int, int, list[int]]:
    return h.exponent, h.offset, h.counts.tolist()


def numpy_counts(values: np.ndarray, h: AdaptiveHistogram) -> np.ndarray:
    finite = values[np.isfinite(values)].astype(np.float64)
    return np.histogram(finite, bins=h.edges.numpy())[0]


# -- hand-computed grids ------------------------------------------------------------------------------
def test_registered_with_default_bins_and_ignores_unknown_options() -> None:
    h = ACCUMULATORS.get("histogram")(thresholds=(0.0,), top_k=3)
    assert isinstance(h, AdaptiveHistogram) and h.bins == 64 and h.total == 0


def test_hand_computed_coarsening() -> None:
    h = feed(AdaptiveHistogram(bins=4), [0.0, 1.0, 2.0, 3.0])
    # w = 1 is the finest power of two with 0 and 3 fewer than 4 bins apart (w = 1/2: bins 0 and 6)
    assert grid(h) == (0, 0, [1, 1, 1, 1])
    assert h.edges.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    feed(h, [5.0])  # 5 is bin 5 at w = 1 → w = 2: [0,2) [2,4) [4,6) [6,8)
    assert grid(h) == (1, 0, [2, 2, 1, 0])
    feed(h, [-3.0])  # w = 2: bins −2 … 2 (5 bins) → w = 4: [−4,0) [0,4) [4,8) [8,12)
    assert grid(h) == (2, -1, [1, 4, 1, 0])
    assert h.edges.tolist() == [-4.0, 0.0, 4.0, 8.0, 12.0]
    assert (h.min, h.max, h.total) == (-3.0, 5.0, 6)


def test_window_slides_to_the_lowest_bin_without_coarsening() -> None:
    h = feed(AdaptiveHistogram(bins=4), [4.0, 5.0])  # w = 1/2: bins 8 and 10, window [4, 6)
    assert grid(h) == (-1, 8, [1, 0, 1, 0])
    feed(h, [3.5])  # bins 7 … 10 still fit at w = 1/2: the window moves down to [3.5, 5.5)
    assert grid(h) == (-1, 7, [1, 1, 0, 1])


def test_values_on_edges_open_their_bin() -> None:
    h = feed(AdaptiveHistogram(bins=4), [-2.0, -1.0, 0.0, 1.0])
    assert h.edges.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0] and h.counts.tolist() == [1, 1, 1, 1]


# -- reference and properties ---------------------------------------------------------------------------
def batches_strategy():
    scale = st.sampled_from([1e-6, 1e-2, 1.0, 3.0, 1e3, 1e8])
    offset = st.sampled_from([0.0, -5.0, 17.0, 1e6, -1e9])
    batch = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 40), scale, offset)
    return st.lists(batch, min_size=1, max_size=5)


def make_batches(spec, dtype=np.float64) -> list[np.ndarray]:
    out = []
    for seed, n, scale, offset in spec:
        rng = np.random.default_rng(seed)
        x = (rng.standard_normal(n) * scale + offset).astype(dtype)
        x[rng.random(n) < 0.1] = rng.choice([np.nan, np.inf, -np.inf])
        out.append(x)
    return out


@settings(max_examples=30, deadline=None)
@given(spec=batches_strategy(), bins=st.sampled_from([4, 5, 64]))
def test_counts_preserved_and_match_numpy_after_every_batch(spec, bins) -> None:
    h, seen = AdaptiveHistogram(bins=bins), []
    for x in make_batches(spec):
        feed(h, x)
        seen.append(x)
        data = np.concatenate(seen)
        finite = data[np.isfinite(data)]
        assert h.total == finite.size
        if finite.size:
            np.testing.assert_array_equal(h.counts.numpy(), numpy_counts(data, h))
            assert (h.min, h.max) == (finite.min(), finite.max())
            edges = h.edges.numpy()
            assert edges[0] <= finite.min() and finite.max() < edges[-1]
            assert np.all(np.diff(edges) == 2.0**h.exponent)


def finest_fitting_exponent(values: np.ndarray, bins: int) -> int:
    """Brute force in exact rationals: the first exponent from twice float64's spacing at max|x| (at
    least 2**-1022) up whose bins of the min and the max are fewer than ``bins`` apart."""
    lo, hi = Fraction(float(values.min())), Fraction(float(values.max()))
    e = max(int(np.log2(np.spacing(float(np.abs(values).max())))) + 1, -1022)
    while math.floor(hi / Fraction(2) ** e) - math.floor(lo / Fraction(2) ** e) >= bins:
        e += 1
    return e


@settings(max_examples=30, deadline=None)
@given(spec=batches_strategy(), bins=st.sampled_from([4, 7, 8, 64]))
def test_grid_is_the_finest_holding_the_data(spec, bins) -> None:
    h = AdaptiveHistogram(bins=bins)
    for x in make_batches(spec):
        feed(h, x)
    data = np.concatenate(make_batches(spec))
    finite = data[np.isfinite(data)]
    if finite.size:
        assert h.exponent == finest_fitting_exponent(finite, bins)


@settings(max_examples=30, deadline=None)
@given(spec=batches_strategy(), bins=st.sampled_from([4, 7, 64]), order=st.randoms(use_true_random=False))
def test_merge_of_random_splits_equals_one_pass(spec, bins, order) -> None:
    batches = make_batches(spec)
    one = AdaptiveHistogram(bins=bins)
    feed(one, np.concatenate(batches))
    parts = []
    for x in batches:
        parts.append(feed(AdaptiveHistogram(bins=bins), x))
    order.shuffle(parts)
    merged = AdaptiveHistogram(bins=bins)
    for p in parts:
        merged.merge(p)
    if one.total == 0:
        assert merged.total == 0
        return
    assert grid(merged) == grid(one) and (merged.min, merged.max) == (one.min, one.max)
    streamed = AdaptiveHistogram(bins=bins)
    for x in batches:
        feed(streamed, x)
    assert grid(streamed) == grid(one)


def test_float32_activations_against_numpy() -> None:
    rng = np.random.default_rng(11)
    h = AdaptiveHistogram()
    data = []
    for scale in (1.0, 0.01, 50.0, 3.0):
        x = (rng.standard_normal((8, 4, 16)) * scale).astype(np.float32)
        data.append(x.ravel())
        feed(h, torch.from_numpy(x))
    np.testing.assert_array_equal(h.counts.numpy(), numpy_counts(np.concatenate(data), h))


@pytest.mark.parametrize("q", [0.0, 0.01, 0.25, 0.5, 0.9, 1.0])
def test_quantile_within_one_bin_of_numpy(q: float) -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.standard_normal(3000), rng.exponential(5.0, 1000)])
    h = AdaptiveHistogram(bins=32)
    for part in np.array_split(x, 5):
        feed(h, part)
    expected = np.quantile(x, q, method="inverted_cdf")
    assert abs(float(h.quantile(q)) - expected) <= h.width
    if q in (0.0, 1.0):
        assert float(h.quantile(q)) == expected  # clamped to the observed extremes


def test_quantile_vector_and_errors() -> None:
    h = feed(AdaptiveHistogram(bins=4), [0.0, 1.0, 2.0, 3.0])
    # uniform within bins: the CDF reaches 0.5 (2 of 4) at the right edge of bin [1, 2)
    assert h.quantile([0.0, 0.5, 1.0]).tolist() == [0.0, 2.0, 3.0]
    assert torch.isnan(AdaptiveHistogram().quantile(0.5))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        h.quantile(1.5)


# -- adversarial -------------------------------------------------------------------------------------
def test_constant_data_single_bin() -> None:
    h = feed(AdaptiveHistogram(), np.full(100, 7.25))
    feed(h, np.full(50, 7.25))
    assert h.total == 150 and int((h.counts > 0).sum()) == 1
    assert h.width == 2 * np.spacing(7.25)  # twice float64's spacing at 7.25: as fine as useful
    assert float(h.quantile(0.5)) == 7.25


def test_single_value_and_zeros() -> None:
    assert feed(AdaptiveHistogram(), [3.0]).total == 1
    h = feed(AdaptiveHistogram(), np.zeros(10))
    assert h.total == 10 and h.counts[0] == 10 and h.edges[0] == 0.0
    feed(h, [-1e-310])  # a subnormal below zero: bin −1 of the finest grid
    assert h.total == 11 and h.counts.tolist()[:2] == [1, 10]


def test_nearly_constant_then_far_away() -> None:
    x = np.array([1.0, 1.0 + 2 * np.spacing(1.0), 1.0])
    h = feed(AdaptiveHistogram(bins=8), x)
    assert h.counts.tolist()[:2] == [2, 1]  # two float64 values 2 ulp apart: two adjacent bins
    feed(h, [1e300])
    assert h.total == 4
    np.testing.assert_array_equal(h.counts.numpy(), numpy_counts(np.array([1.0, 1.0, 1.0, 1e300]), h))


def test_huge_range_jumps_keep_every_count() -> None:
    big = np.finfo(np.float64).max
    h = AdaptiveHistogram(bins=16)
    seen = []
    for x in ([1e-300, 2e-300], [-1e-300], [1e300], [-big, big], [0.0, 5e-324]):
        feed(h, np.array(x))
        seen += x
        assert h.total == len(seen)
    assert h.min == -big and h.max == big
    assert int(h.counts.sum()) == len(seen)


def test_nan_and_inf_are_not_binned() -> None:
    h = feed(AdaptiveHistogram(), [np.nan, np.inf, -np.inf])
    assert h.total == 0 and h.counts is None
    feed(h, [1.0, np.nan, 2.0, -np.inf])
    assert h.total == 2 and (h.min, h.max) == (1.0, 2.0)


# -- state, merge edge cases, kernel switch ---------------------------------------------------------------
def test_state_dict_round_trip_then_continue() -> None:
    a = feed(AdaptiveHistogram(bins=9), np.linspace(-3, 4, 50))
    b = AdaptiveHistogram.from_state_dict(a.state_dict())
    assert grid(a) == grid(b) and (a.min, a.max) == (b.min, b.max)
    feed(a, [100.0])
    feed(b, [100.0])
    assert grid(a) == grid(b)
    empty = AdaptiveHistogram.from_state_dict(AdaptiveHistogram(bins=5).state_dict())
    assert empty.bins == 5 and empty.total == 0


def test_state_dict_is_a_snapshot_in_both_directions() -> None:
    # the state is updated in place: neither the dict handed out nor the dict loaded may share it
    a = feed(AdaptiveHistogram(bins=9), np.linspace(-3, 4, 50))
    state = a.state_dict()
    kept = state["counts"].clone()
    feed(a, np.linspace(-3, 4, 50))
    b = AdaptiveHistogram.from_state_dict(state)
    feed(b, np.linspace(-3, 4, 50))
    assert torch.equal(state["counts"], kept)
    assert torch.equal(b.counts, 2 * kept) and torch.equal(a.counts, b.counts)


def test_merge_with_empty_and_bins_mismatch() -> None:
    a = feed(AdaptiveHistogram(bins=8), [1.0, 2.0])
    before = grid(a)
    a.merge(AdaptiveHistogram(bins=8))
    assert grid(a) == before
    e = AdaptiveHistogram(bins=8)
    e.merge(a)
    assert grid(e) == before
    with pytest.raises(ValueError, match="16 bins into one of 8"):
        a.merge(AdaptiveHistogram(bins=16))
    with pytest.raises(ValueError, match="must be ≥ 4"):
        AdaptiveHistogram(bins=3)


def test_uses_kernels_histogram_pow2(monkeypatch) -> None:
    calls = []

    def fake_pow2(x, exponent, offset, bins, backend=None):  # an independent implementation of the contract
        v = x.detach().double().reshape(-1).numpy()
        v = v[np.isfinite(v)]
        calls.append((exponent, offset, bins, backend))
        edges = [math.ldexp(float(offset + i), exponent) for i in range(bins + 1)]
        return torch.from_numpy(np.histogram(v, bins=edges)[0])

    monkeypatch.setattr(kernels, "histogram_pow2", fake_pow2)
    h = feed(AdaptiveHistogram(bins=4), [0.0, 1.0, 2.0, 3.0])
    assert calls == [(0, 0, 4, None)]
    assert h.counts.tolist() == [1, 1, 1, 1]
    calls.clear()
    feed(AdaptiveHistogram(bins=4, backend="torch"), [0.0, 1.0, 2.0, 3.0])
    assert calls == [(0, 0, 4, "torch")]  # a forced backend counts the values too


@pytest.mark.parametrize("seed", range(4))
def test_every_backend_gives_the_same_histogram(seed: int) -> None:
    rng = np.random.default_rng(seed)
    batches = [(rng.standard_normal(200) * 10.0 ** rng.integers(-8, 8)).astype(np.float32) for _ in range(4)]
    results = []
    for backend in (None, "torch"):
        h = AdaptiveHistogram(bins=16, backend=backend)
        for x in batches:
            feed(h, torch.from_numpy(x))
        results.append(grid(h))
    assert results[0] == results[1]


def _native_ok() -> bool:
    return kernels.BACKENDS.get("native").available(torch.device("cpu"), torch.float32)[0]


@pytest.mark.skipif(not _native_ok(), reason="needs the compiled extension")
def test_counts_taken_in_the_reduction_read_equal_a_separate_pass() -> None:
    # batches inside the grid (counted in the reduction's read, added from its NumPy counts) and batches
    # past it (grid grows: recount), one without a finite value; against the torch reduction's tensors
    from layerscope.stats.histogram import AdaptiveHistogram

    g = torch.Generator().manual_seed(5)
    scales = [1.0, 0.5, 4.0, 1.0, float("nan"), 0.25, 9.0, 2.0]
    fused, separate = AdaptiveHistogram(bins=48), AdaptiveHistogram(bins=48)
    used, finite = [], 0
    for s in scales:
        x = torch.randn(6, 5, 77, generator=g) * s
        x[1, 2, ::9] = float("nan")
        x[0, 4, 3] = float("inf")
        finite += int(torch.isfinite(x).sum())
        view = make_view(x, Layout(1, Axis.TIME))
        red = kernels.channel_reduce(view, (0.0,), backend="native", histogram_grid=fused.fused_grid())
        assert red.arrays is not None and (red.histogram_array is None) == (red.histogram is None)
        used.append(red.histogram is not None)
        fused.update(view, red)
        separate.update(view, kernels.channel_reduce(view, (0.0,), backend="torch"))
        assert (fused.exponent, fused.offset, fused.min, fused.max) == (
            separate.exponent, separate.offset, separate.min, separate.max)
        assert torch.equal(fused.counts, separate.counts)
    assert used == [False] + [True] * (len(scales) - 1)
    assert fused.total == separate.total == finite  # every finite value, once
