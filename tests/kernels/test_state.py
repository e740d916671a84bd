"""Native in-place state updates (``_C.coverage_update``, ``_C.moments_merge``): the same state as the
accumulators' torch code (bit for bit) and as independent brute-force references — pure-Python loops
over float64 for coverage, a float64 NumPy two-pass for moments — on random and adversarial data."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from layerscope import kernels
from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import _native
from layerscope.stats.coverage import NeuronCoverage
from layerscope.stats.moments import ChannelMoments

from ._reference import NATIVE_BUILT, native_error

pytestmark = [
    pytest.mark.native,
    pytest.mark.skipif(not NATIVE_BUILT, reason=f"native extension not built: {native_error()}"),
]

NAN, INF = math.nan, math.inf
TAUS = (0.0, 0.25, 0.5, 0.75, -1.0)
COVERAGE_FIELDS = ("nc_hits", "topk_hits", "low", "high", "skipped", "kmnc_hits", "lower_hits", "upper_hits")


# -- brute-force coverage reference (the module docstring of stats.coverage, loop by loop) ------------
def coverage_bruteforce(rows: list[list[float]], taus, k: int, ranges=None, sections: int = 1) -> dict:
    c = len(rows[0]) if rows else 0
    out = {"nc_hits": np.zeros((len(taus), c), bool), "topk_hits": np.zeros(c, bool),
           "low": np.full(c, INF), "high": np.full(c, -INF), "skipped": np.zeros(c, np.int64),
           "kmnc_hits": np.zeros((c, sections), bool), "lower_hits": np.zeros(c, bool),
           "upper_hits": np.zeros(c, bool)}
    for row in rows:
        phi = [v if math.isfinite(v) else None for v in row]  # None: skipped
        finite = [v for v in phi if v is not None]
        for j, v in enumerate(phi):
            if v is None:
                out["skipped"][j] += 1
                continue
            out["low"][j], out["high"][j] = min(out["low"][j], v), max(out["high"][j], v)
            if max(finite) - min(finite) > 0:  # DeepXplore: scaled over the input's neurons
                scaled = (v - min(finite)) / (max(finite) - min(finite))
                for t, tau in enumerate(taus):
                    out["nc_hits"][t, j] |= scaled > tau
            kth = sorted(finite, reverse=True)[min(k, c, len(finite)) - 1]  # ties inclusive
            out["topk_hits"][j] |= v >= kth
            if ranges is not None:
                range_hits(out, j, v, ranges[0][j], ranges[1][j], sections)
    return out


def range_hits(out: dict, j: int, v: float, lo: float, hi: float, k: int) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        return
    out["lower_hits"][j] |= v < lo
    out["upper_hits"][j] |= v > hi
    if hi - lo > 0 and lo <= v <= hi:
        q = ((v - lo) * k) / (hi - lo)  # DeepGauge section, floored; the last one closed
        if math.isnan(q):  # ∞/∞ where high − low overflows float64: no section (the torch path's rule)
            return
        out["kmnc_hits"][j, min(math.floor(q), k - 1)] = True


# -- the two paths -----------------------------------------------------------------------------------
def feed_coverage(batches: list[torch.Tensor], **opts: Any) -> NeuronCoverage:
    acc = NeuronCoverage(coverage_thresholds=TAUS, **opts)
    for b in batches:
        acc.update(None, SimpleNamespace(sample_mean=b))  # only the neuron values are read
    return acc


def both_paths(feed, *args, **kwargs):
    """The accumulator fed through the native kernel (auto on CPU) and through its torch code."""
    assert kernels.state_kernels(torch.device("cpu")) is _native.BACKENDS.get("native").state
    assert kernels.state_kernels(torch.device("cpu"), "torch") is None
    return feed(*args, **kwargs), feed(*args, **kwargs, backend="torch")


def check_coverage(rows, dtype, k, ranges=None, sections=4, splits=1) -> None:
    x = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), -1).to(dtype)
    batches = list(torch.tensor_split(x, splits)) if len(rows) else [x]
    opts = {"top_k": k, "kmnc_sections": sections, "ranges": ranges}
    native, torch_path = both_paths(feed_coverage, batches, **opts)
    expected = coverage_bruteforce(x.double().tolist(), TAUS, k, ranges, sections)
    fields = COVERAGE_FIELDS if ranges is not None else COVERAGE_FIELDS[:5]
    for f in fields:
        got, ref = getattr(native, f), getattr(torch_path, f)
        assert got.dtype == ref.dtype and torch.equal(got, ref), f"{f}: native {got} vs torch {ref}"
        np.testing.assert_array_equal(got.numpy(), expected[f], err_msg=f)
    assert native.samples == torch_path.samples == len(rows)


# -- coverage: random data ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "c", "k"), [(64, 64, 2), (64, 512, 2), (17, 30, 8), (17, 30, 9), (5, 40, 25)])
def test_coverage_random(dtype, n, c, k) -> None:
    rng = np.random.default_rng(n * c + k)
    x = rng.normal(size=(n, c)) * rng.uniform(0.1, 3, size=c) + rng.normal(size=c)
    x[rng.random(x.shape) < 0.05] = NAN
    x[rng.random(x.shape) < 0.02] = rng.choice([INF, -INF])
    x[rng.random(x.shape) < 0.05] = 0.5  # ties, also at the k-th value
    low = np.nanmin(np.where(np.isfinite(x), x, NAN), axis=0) * 0.8
    ranges = (low.tolist(), (low + rng.uniform(0, 2, size=c)).tolist())
    check_coverage(x.tolist(), dtype, k, ranges, sections=7, splits=3)
    check_coverage(x.tolist(), dtype, k, splits=2)


# A batch of 16384 neuron values or more is split over the threads (each but the first into hit sets and
# extremes of its own, folded in after): the same state for any thread count, and the brute force's.
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("n", "c"), [(64, 512), (300, 64)])
def test_coverage_of_a_large_batch_on_several_threads(threads, n, c) -> None:
    rng = np.random.default_rng(n + c)
    x = rng.normal(size=(n, c)) * rng.uniform(0.1, 3, size=c) + rng.normal(size=c)
    x[rng.random(x.shape) < 0.05] = NAN
    x[rng.random(x.shape) < 0.05] = 0.5
    x[:, :3] = -10.0  # the batch's minimum in every sample but the last, whose top 3 they are:
    x[-1, :3] = 100.0  # hit only by the samples of the last thread
    low = np.nanmin(x, axis=0) * 0.8
    ranges = (low.tolist(), (low + rng.uniform(0, 2, size=c)).tolist())
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        check_coverage(x.tolist(), torch.float32, 3, ranges, sections=5)
    finally:
        torch.set_num_threads(old)


# -- coverage: adversarial data ----------------------------------------------------------------------
ADVERSARIAL = {
    "nan_and_inf_rows": [[NAN, NAN, NAN], [INF, -INF, NAN], [1.0, NAN, INF], [2.0, -1.0, 0.5]],
    "all_equal_inputs": [[3.0, 3.0, 3.0], [-0.0, 0.0, -0.0], [1.0, 1.0, 1.0]],
    "ties_at_kth": [[1.0, 3.0, 3.0, 3.0, 2.0], [5.0, 5.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 7.0]],
    "one_neuron": [[1.0], [NAN], [-4.0], [INF]],
    "one_input": [[0.5, -2.0, 9.0, 9.0]],
    "huge_and_tiny": [[1e308, -1e308, 0.0], [5e-324, -5e-324, 0.0], [1.7e308, 1.7e308, -1.7e308]],
    "single_finite": [[NAN, 2.0, NAN], [NAN, NAN, -1.0]],
    "long_rows": [  # ascending (every value enters the top k), descending with NaN gaps, many ties
        [float(j) for j in range(40)],
        [float(40 - j) if j % 7 else NAN for j in range(40)],
        [float(j % 3) for j in range(40)],
    ],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 8, 9])
@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_coverage_adversarial(case, k, dtype) -> None:
    rows = ADVERSARIAL[case]
    check_coverage(rows, dtype, k)  # k > C: every finite neuron is in the top k
    check_coverage(rows, dtype, k, splits=len(rows))  # one input per batch


RANGE_ROWS = [[0.0, 0.25, 1.0, 5.0, 1.0, 0.0], [0.74, 1.5, -0.5, 2.0, NAN, 1e308], [1.0, 0.5, 0.99, 5.0, 3.0, -1e308]]
RANGES = (
    [0.0, 0.0, 0.0, 5.0, NAN, -1e308],  # n3: low == high (no sections); n4: never observed
    [1.0, 1.0, 1.0, 5.0, 2.0, 1e308],   # n5: high − low overflows to inf
)


@pytest.mark.parametrize("sections", [1, 4, 3, 100])
def test_coverage_range_edges(sections) -> None:
    check_coverage(RANGE_ROWS, torch.float64, 2, RANGES, sections=sections)
    inverted = (RANGES[1], RANGES[0])  # low > high: records nothing
    check_coverage(RANGE_ROWS, torch.float64, 2, inverted, sections=sections)


def test_coverage_empty_batch_changes_nothing() -> None:
    acc = feed_coverage([torch.zeros(0, 3, dtype=torch.float64)])
    assert acc.samples == 0 and not acc.nc_hits.any() and acc.skipped.tolist() == [0, 0, 0]


@pytest.mark.parametrize("with_ranges", [False, True])
def test_coverage_fed_by_reductions_matches_the_torch_path(with_ranges) -> None:
    # the accumulator reads a native reduction's NumPy neuron values (ChannelStats.arrays), also into
    # state it updates with its torch code (a forced backend); integer activations over 4 positions
    # make every sample mean exact, so both reductions give the same neuron values bit for bit
    rng = np.random.default_rng(3)
    batches = [torch.from_numpy(rng.integers(-8, 9, size=(n, 6, 4)).astype(np.float32)) for n in (5, 1, 7, 4)]
    batches[2][1, 2] = NAN  # a neuron without a finite value for one input: skipped
    ranges = ([-4.0, -1.0, 0.0, 2.0, NAN, -8.0], [4.0, 1.0, 0.0, 6.0, 1.0, 8.0]) if with_ranges else None
    states = []
    for reduction, backend in (("native", None), ("native", "torch"), ("torch", "torch")):
        acc = NeuronCoverage(coverage_thresholds=TAUS, top_k=2, kmnc_sections=5, ranges=ranges, backend=backend)
        for x in batches:
            view = make_view(x, Layout(1, Axis.TIME))
            reduced = kernels.channel_reduce(view, (), backend=reduction)
            assert (reduced.arrays is not None) == (reduction == "native")
            acc.update(view, reduced)
        fields = COVERAGE_FIELDS if with_ranges else COVERAGE_FIELDS[:5]
        states.append((acc.samples, {f: getattr(acc, f) for f in fields}))
    for samples, state in states[1:]:
        assert samples == states[0][0] == 17
        for f, t in state.items():
            assert torch.equal(t, states[0][1][f]), f


# -- moments -----------------------------------------------------------------------------------------
def feed_moments(batches: list[torch.Tensor], thresholds=(0.0, 0.5), backend=None) -> ChannelMoments:
    acc = ChannelMoments(thresholds, backend=backend)
    for b in batches:
        view = make_view(b, Layout(1, Axis.TIME))
        acc.update(view, kernels.channel_reduce(view, acc.thresholds))
    return acc


def moments_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """float64 two-pass over the finite values of x [N, C, S], per channel."""
    rows = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    fin = [r[np.isfinite(r)] for r in rows]
    mean = np.array([f.mean() if f.size else 0.0 for f in fin])
    return {"count": np.array([f.size for f in fin]), "mean": mean,
            "m2": np.array([((f - m) ** 2).sum() for f, m in zip(fin, mean, strict=True)])}


@pytest.mark.parametrize("thresholds", [(0.0, 0.5), ()])
@pytest.mark.parametrize("seed", [0, 1])
def test_moments_merge_matches_torch_and_two_pass(seed, thresholds) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(24, 7, 5, generator=gen, dtype=torch.float64) * 3 + 1e3
    x[:, 0] = NAN  # a channel with no finite value: count 0, min +inf
    x[3, 1, 2], x[5, 2, :] = INF, 0.0
    batches = list(torch.tensor_split(x, [1, 2, 9, 9, 20]))  # an empty batch, one-sample batches
    native, torch_path = both_paths(feed_moments, batches, thresholds)
    for f in ChannelMoments._FIELDS:  # same formula, same operation order: exactly equal
        assert torch.equal(getattr(native, f), getattr(torch_path, f)), f
    ref = moments_reference(x.numpy())
    np.testing.assert_array_equal(native.count.numpy(), ref["count"])
    np.testing.assert_allclose(native.mean.numpy(), ref["mean"], rtol=1e-13)
    np.testing.assert_allclose(native.m2.numpy(), ref["m2"], rtol=1e-9)


def test_moments_merge_of_accumulators_matches_torch() -> None:
    gen = torch.Generator().manual_seed(4)
    parts = [torch.randn(n, 3, 4, generator=gen, dtype=torch.float64) - 7 for n in (1, 5, 2)]

    def merged(batches, backend=None):
        acc = ChannelMoments((0.0,), backend=backend)
        for b in batches:
            acc.merge(ChannelMoments.from_state_dict(feed_moments([b], (0.0,), backend).state_dict()))
        return acc

    native, torch_path = both_paths(merged, parts)
    for f in ChannelMoments._FIELDS:
        assert torch.equal(getattr(native, f), getattr(torch_path, f)), f


# -- dispatch and argument checks ----------------------------------------------------------------------
def test_state_kernels_only_on_cpu_with_the_extension(monkeypatch) -> None:
    monkeypatch.setattr(kernels, "_state_cache", {})
    native = kernels.BACKENDS.get("native").state
    assert kernels.state_kernels(torch.device("cpu")) is native
    assert kernels.state_kernels(torch.device("cpu"), "native") is native
    assert kernels.state_kernels(torch.device("cpu"), "torch") is None  # the accumulators' torch code
    assert kernels.state_kernels(torch.device("cuda")) is None
    monkeypatch.setattr(kernels, "_state_cache", {})
    monkeypatch.setattr(_native, "_C", None)
    monkeypatch.setattr(_native, "_warned", True)
    assert kernels.state_kernels(torch.device("cpu")) is None


def coverage_args(c=3, t=2, n=4):
    return [np.zeros((n, c)), np.zeros(t), 2, np.zeros((t, c), bool), np.zeros(c, bool), np.full(c, INF),
            np.full(c, -INF), np.zeros(c, np.int64), None]


@pytest.mark.parametrize(("index", "bad", "message"), [
    (0, np.zeros((4, 3), np.int64), "values must be a 2-D float32 or float64 array"),
    (2, 0, "top_k must be >= 1"),
    (3, np.zeros((2, 4), bool),
     r"nc_hits: expected a C-contiguous bool NumPy array of shape \[2, 3\], got shape \[2, 4\]"),
    (4, np.zeros(3, np.uint8), "topk_hits: expected a C-contiguous bool"),
    (5, np.zeros(6)[::2], r"low: .* \(not C-contiguous\)"),
    (7, np.zeros(3, np.int32), "skipped: expected a C-contiguous int64"),
    (8, (np.zeros(3), np.zeros(3)), "ranges must be"),
])
def test_coverage_update_rejects_bad_arrays(index, bad, message) -> None:
    args = coverage_args()
    args[index] = bad
    with pytest.raises(ValueError, match=message):
        _native._C.coverage_update(*args)


def test_coverage_update_rejects_read_only_state_and_lists() -> None:
    args = coverage_args()
    args[4].flags.writeable = False
    with pytest.raises(ValueError, match="topk_hits: the array is read-only"):
        _native._C.coverage_update(*args)
    args = coverage_args()
    args[6] = [-INF] * 3  # a converted copy would swallow the update
    with pytest.raises(ValueError, match="high: expected a C-contiguous float64"):
        _native._C.coverage_update(*args)


def test_moments_merge_rejects_mismatched_parts() -> None:
    state = feed_moments([torch.randn(2, 3, 4, dtype=torch.float64)], (0.0,))
    arrays = tuple(getattr(state, f).numpy() for f in ChannelMoments._FIELDS)
    short = tuple(a[..., :2].copy() for a in arrays)
    with pytest.raises(ValueError, match=r"moments_merge: part.count: .*shape \[3\], got shape \[2\]"):
        _native._C.moments_merge(arrays, short)
    with pytest.raises(ValueError, match="expected 9 arrays"):
        _native._C.moments_merge(arrays, arrays[:8])
    as_f32 = (arrays[0], arrays[1].astype(np.float32), *arrays[2:])
    with pytest.raises(ValueError, match=r"part\.mean: expected a C-contiguous float64"):
        _native._C.moments_merge(arrays, as_f32)


@pytest.mark.skipif(not NATIVE_BUILT, reason=f"native extension not built: {native_error()}")
@pytest.mark.parametrize("copy_of", ["deepcopy", "pickle"])
@pytest.mark.parametrize("stat", ["moments", "coverage", "histogram"])
def test_a_copy_updates_its_own_state(stat, copy_of):
    # the native updates write through NumPy views of the state tensors: a copy must view its own
    import copy
    import pickle

    from layerscope.stats import ACCUMULATORS

    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(4, 5, 6, 6, generator=g), torch.randn(4, 5, 6, 6, generator=g) * 4 + 2]
    views = [make_view(x, Layout(1, Axis.SPACE)) for x in xs]
    make = ACCUMULATORS.get(stat)

    def fed(acc, views):
        for v in views:
            acc.update(v, kernels.channel_reduce(v, (0.0,), backend="native", histogram_grid=getattr(
                acc, "fused_grid", lambda: None)()))
        return acc

    original = fed(make(thresholds=(0.0,)), views[:1])
    before = original.state_dict()
    twin = copy.deepcopy(original) if copy_of == "deepcopy" else pickle.loads(pickle.dumps(original))
    fed(twin, views[1:])
    want = fed(make(thresholds=(0.0,)), views).state_dict()
    got = twin.state_dict()
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value) or torch.allclose(got[key], value, rtol=0, atol=0, equal_nan=True), key
    for key, value in original.state_dict().items():  # and the original is as it was
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, before[key]) or torch.allclose(value, before[key], equal_nan=True), key
