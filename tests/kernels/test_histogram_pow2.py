"""``kernels.histogram_pow2``: every backend against brute-force references of the power-of-two grid
(bin i of the window holds ``floor(x / 2**e) == offset + i``; outside, NaN, ±Inf → not counted).

The adversarial reference is exact rational arithmetic (``fractions.Fraction``), independent of any
floating-point rounding; the random one is float64 NumPy ``np.floor(x / w)``."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from layerscope import ConfigError, kernels

from ._reference import needs_native

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
F32_MAX, F32_TINY = float(torch.finfo(torch.float32).max), float(torch.finfo(torch.float32).smallest_normal)


def backends() -> list[str]:
    names = ["torch"]
    ok, _ = kernels.BACKENDS.get("native").available(torch.device("cpu"), torch.float32)
    return names + (["native"] if ok else [])


def exact_counts(x: torch.Tensor, e: int, offset: int, bins: int) -> np.ndarray:
    """Brute force in rationals: bin of v is floor(v / 2**e), exactly."""
    counts = np.zeros(bins, dtype=np.int64)
    w = Fraction(2) ** e
    for v in x.detach().to(torch.float64).reshape(-1).tolist():
        if not math.isfinite(v):
            continue
        i = math.floor(Fraction(v) / w) - offset
        if 0 <= i < bins:
            counts[i] += 1
    return counts


def numpy_counts(x: torch.Tensor, e: int, offset: int, bins: int) -> np.ndarray:
    """float64 NumPy: np.floor(x / w) (exact here: no value under- or overflows the quotient)."""
    v = x.detach().to(torch.float64).reshape(-1).numpy()
    j = np.floor(v[np.isfinite(v)] / 2.0**e) - offset
    return np.bincount(j[(j >= 0) & (j < bins)].astype(np.int64), minlength=bins)


def grid_values(e: int, offset: int, bins: int, dtype: torch.dtype) -> list[float]:
    """Edges of the window (and one bin beyond), each with its neighbours in ``dtype``, negated too."""
    w = math.ldexp(1.0, e)
    edges = [float(offset + i) * w for i in range(-1, bins + 2)]  # ±inf past float64's range
    as_dtype = torch.tensor(edges, dtype=torch.float64).to(dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    up, down = torch.nextafter(as_dtype, inf), torch.nextafter(as_dtype, -inf)
    values = torch.cat([as_dtype, up, down]).to(torch.float64)
    return values.tolist() + (-values).tolist()


def adversarial(dtype: torch.dtype, e: int, offset: int, bins: int) -> torch.Tensor:
    finfo = torch.finfo(dtype)
    limits = [finfo.max, finfo.tiny, finfo.tiny * finfo.eps, finfo.eps]  # max, smallest normal, subnormal
    specials = [math.nan, math.inf, -math.inf, 0.0, -0.0, *limits, *(-v for v in limits)]
    values = grid_values(e, offset, bins, dtype) + specials
    noise = torch.randn(2001, generator=torch.Generator().manual_seed(bins)) * (bins * math.ldexp(1.0, e))
    return torch.cat([torch.tensor(values, dtype=torch.float64), noise.double()]).to(dtype)


# (exponent, offset, bins): small grids around 0, negative windows, float32's exact-integer limit
# (|offset| + bins = 2**24), past it (float64 path), 2**-e outside float32's range (both ways),
# bins wider than the data, and the float64 extremes of the accumulator's range.
GRIDS = [
    (-3, -10, 20),
    (0, -4, 8),
    (2, -7, 3),
    (0, 2**24 - 64, 64),
    (-20, 2**30, 64),
    (-140, -5, 10),
    (127, -2, 4),
    (-1022, -(2**40), 64),
    (1023, -2, 4),
    (-60, 2**52, 16),
    (-5, -150, 300),  # more slots than a uint8 holds (the torch path's int32 bincount)
]


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("e", "offset", "bins"), GRIDS)
def test_matches_exact_reference_on_adversarial_values(backend, dtype, e, offset, bins):
    x = adversarial(dtype, e, offset, bins)
    got = kernels.histogram_pow2(x, e, offset, bins, backend=backend)
    assert got.dtype == torch.int64 and got.shape == (bins,)
    np.testing.assert_array_equal(got.numpy(), exact_counts(x, e, offset, bins))


@pytest.mark.parametrize("backend", backends())
def test_edge_semantics(backend):
    # w = 0.25, window [−0.5, 0.5): bins −2 … 1
    x = torch.tensor([-0.5, -0.25, -1e-30, -0.0, 0.0, 0.2499999, 0.25, 0.5, math.nan, -math.inf], dtype=torch.float32)
    got = kernels.histogram_pow2(x, -2, -2, 4, backend=backend)
    # −0.5 → bin −2; −0.25 → −1; −1e-30 → −1 (a negative value is never in bin 0); ±0 → 0; 0.2499999 → 0;
    # 0.25 → 1; 0.5 is the next window's; NaN/−Inf not counted
    assert got.tolist() == [1, 2, 3, 1]


@pytest.mark.parametrize("backend", backends())
def test_negative_value_whose_quotient_underflows_is_in_bin_minus_one(backend):
    tiny = torch.tensor([-5e-324, 5e-324, -1e-300], dtype=torch.float64)
    assert kernels.histogram_pow2(tiny, 1023, -2, 4, backend=backend).tolist() == [0, 2, 1, 0]
    sub = torch.tensor([-1e-45, 1e-45, -1e-40], dtype=torch.float32)  # float32 subnormals
    assert kernels.histogram_pow2(sub, 100, -2, 4, backend=backend).tolist() == [0, 2, 1, 0]


@pytest.mark.parametrize("backend", backends())
def test_overflowing_quotient_is_outside(backend):
    x = torch.tensor([F32_MAX, -F32_MAX, 1.0], dtype=torch.float32)
    assert kernels.histogram_pow2(x, -120, 2**23, 8, backend=backend).tolist() == [0] * 8
    x64 = torch.tensor([1e308, -1e308, 2.0**-1022], dtype=torch.float64)
    assert kernels.histogram_pow2(x64, -1022, 0, 4, backend=backend).tolist() == [0, 1, 0, 0]  # 2**-1022 → bin 1


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", DTYPES)
def test_random_against_numpy(backend, dtype):
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(100_003, generator=g) * 3 + 0.5).to(dtype)
    x[::97] = 0.0
    for e, offset, bins in [(-3, -96, 200), (-2, -20, 64), (0, 0, 16), (-4, 3, 64)]:
        got = kernels.histogram_pow2(x, e, offset, bins, backend=backend)
        np.testing.assert_array_equal(got.numpy(), numpy_counts(x, e, offset, bins))


@pytest.mark.parametrize("backend", backends())
def test_non_contiguous_and_channels_last(backend):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(8, 6, 5, 7, generator=g)
    for x in (base.transpose(1, 3), base[:, ::2, :, 1:], base.to(memory_format=torch.channels_last), base[0, 0, 0]):
        got = kernels.histogram_pow2(x, -2, -16, 32, backend=backend)
        np.testing.assert_array_equal(got.numpy(), numpy_counts(x.contiguous(), -2, -16, 32))


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
def test_native_equals_torch_for_1_2_and_n_threads(dtype):
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(1_000_003, generator=g) * 4).relu().to(dtype)  # half zeros: one hot bin
    x[::1001] = math.nan
    expected = kernels.histogram_pow2(x, -3, 0, 64, backend="torch")
    before = torch.get_num_threads()
    try:
        for n in (1, 2, 3, 8):
            torch.set_num_threads(n)
            got = kernels.histogram_pow2(x, -3, 0, 64, backend="native")
            np.testing.assert_array_equal(got.numpy(), expected.numpy(), err_msg=f"{n} threads")
    finally:
        torch.set_num_threads(before)


@needs_native
def test_native_reports_finite_values_below_and_above_the_window():
    from layerscope.kernels._native import _C

    x = np.array([-3.0, -2.0, 0.0, 1.5, 2.0, 7.0, np.nan, np.inf, -np.inf, 3e38], dtype=np.float32)
    out = _C.histogram_pow2(x, "float32", 0, -2, 4, 1)  # window [−2, 2)
    assert out.tolist() == [1, 0, 1, 1, 1, 3]  # 4 bins, then below (−3) and above (2, 7, 3e38)


def test_bad_arguments_raise_config_error():
    x = torch.zeros(3)
    with pytest.raises(ConfigError, match="bins must be a positive integer"):
        kernels.histogram_pow2(x, 0, 0, 0)
    with pytest.raises(ConfigError, match="exponent must be an integer in"):
        kernels.histogram_pow2(x, 1024, 0, 4)
    with pytest.raises(ConfigError, match="exponent must be an integer in"):
        kernels.histogram_pow2(x, 0.5, 0, 4)
    with pytest.raises(ConfigError, match=r"\|offset\| \+ bins ≤ 2\*\*53"):
        kernels.histogram_pow2(x, 0, 2**53, 4)


def test_every_backend_has_a_reference_or_falls_back():
    backend, _ = kernels.select_backend(torch.device("cpu"), torch.float32, kernel="histogram_pow2")
    assert backend.name in {"native", "torch"}


# The fused form: channel_reduce(view, thresholds, histogram_grid=...) counts in the reduction's own read.
def _fused(x: torch.Tensor, channels_last: bool, e: int, offset: int, bins: int, threads: int = 2):
    from layerscope.capture.layout import Axis, LayoutView

    view = LayoutView(x, channels_last, Axis.SPACE, (x.shape[1] if channels_last else x.shape[2],))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return kernels.channel_reduce(view, (0.0,), backend="native", histogram_grid=(e, offset, bins))
    finally:
        torch.set_num_threads(old)


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("e", "offset", "bins"), GRIDS[:6])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_counts_equal_the_exact_reference(dtype, e, offset, bins, channels_last):
    flat = adversarial(dtype, e, offset, bins)
    n = flat.numel() - flat.numel() % 6
    x = flat[:n].reshape(2, 3, -1)  # [N, C, S]; channels last: the same values as [N, S, C]
    x = x.transpose(1, 2).contiguous() if channels_last else x
    got = _fused(x, channels_last, e, offset, bins)
    assert got.histogram_grid == (e, offset, bins) and got.histogram.shape == (bins + 2,)
    np.testing.assert_array_equal(got.histogram[:bins].numpy(), exact_counts(x, e, offset, bins))
    # then the finite values below and above the window, as histogram_pow2's kernel counts them
    v = x.double().reshape(-1)
    v = v[torch.isfinite(v)]
    j = torch.floor(v / math.ldexp(1.0, e))
    j = torch.where((j == 0) & (v < 0), -1.0, j) - offset
    assert got.histogram[bins:].tolist() == [int((j < 0).sum()), int((j >= bins).sum())]


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape,channels_last", [((64, 16, 300), False), ((4, 5000, 3), False),
                                                 ((8, 700, 300), True), ((2, 3, 9000), False),
                                                 ((16, 40, 32), False), ((64, 20, 98), False)])
def test_fused_counts_on_strided_and_long_inputs(threads, shape, channels_last):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g).relu()
    x[0].view(-1)[::17] = float("nan")
    src = x[:, :, ::2] if not channels_last else x[:, ::2, :]  # non-contiguous runs / rows
    got = _fused(src, channels_last, -4, -3, 80, threads)
    np.testing.assert_array_equal(got.histogram[:80].numpy(), numpy_counts(src, -4, -3, 80))


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("s", [1, 4, 16, 32, 256, 9000])
@pytest.mark.parametrize("sliced", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_counts_on_contiguous_runs(threads, s, sliced, channels_last):
    # values read in place: short runs in boxes counted slab by slab, longer ones (and the blocks of long
    # ones, and channels-last tiles) while the next block's lines are fetched; a channel slice leaves
    # gaps between the slabs and rows
    g = torch.Generator().manual_seed(s)
    x = torch.randn(max(2, 2**15 // s), 40, s, generator=g).relu()
    x[1].view(-1)[::13] = float("nan")
    x[-1, 7, 0] = float("inf")
    if channels_last:  # [N, S, C], channels contiguous; 300 channels: two tiles of a block
        x = torch.randn(max(2, 2**12 // s), s, 300, generator=g).relu()
        x[1].view(-1)[::13] = float("nan")
    src = (x[..., 3:290] if channels_last else x[:, 3:31]) if sliced else x
    got = _fused(src, channels_last, -4, -3, 80, threads)
    np.testing.assert_array_equal(got.histogram[:80].numpy(), numpy_counts(src, -4, -3, 80))


@needs_native
def test_fused_grid_is_checked():
    with pytest.raises(ValueError, match="bins"):
        _fused(torch.randn(2, 3, 4), False, 0, 0, 0)


def test_backends_without_the_fused_count_leave_it_to_the_caller():
    from layerscope.capture.layout import Axis, LayoutView

    view = LayoutView(torch.randn(2, 3, 4), False, Axis.SPACE, (4,))
    got = kernels.channel_reduce(view, (0.0,), backend="torch", histogram_grid=(0, 0, 8))
    assert got.histogram is None and got.histogram_grid is None


# The native kernel counts the slot of 0.0 apart (ReLU zeros) and the other values in pairs through a
# joint table that is flushed every 2**20 pairs: zeros inside and outside the window, runs of nothing but
# zeros, −0.0, and inputs long enough to cross several flushes.
def _numpy_window(x: torch.Tensor, e: int, offset: int, bins: int) -> list[int]:
    """float64 NumPy counts [bins] + [below, above] of the finite values (no quotient underflows here)."""
    v = x.detach().to(torch.float64).reshape(-1).numpy()
    j = np.floor(v[np.isfinite(v)] / 2.0**e) - offset
    inside = j[(j >= 0) & (j < bins)].astype(np.int64)
    return [*np.bincount(inside, minlength=bins).tolist(), int((j < 0).sum()), int((j >= bins).sum())]


def _native_window(x: torch.Tensor, e: int, offset: int, bins: int, threads: int = 2) -> list[int]:
    from layerscope.kernels._native import _C, as_array

    return _C.histogram_pow2(as_array(x.reshape(-1)), "float32", e, offset, bins, threads).tolist()


def _zeros_and_values(n: int, seed: int) -> torch.Tensor:
    """n float32 values: runs of +0.0 and −0.0, a ReLU-like tail and a few NaN / ±Inf."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g).relu() * 3
    x[torch.rand(n, generator=g) < 0.3] = -0.0
    x[n // 4 : n // 2] = 0.0  # one long run of zeros
    x[::101] = math.nan
    x[::103] = -math.inf
    return x


# windows holding 0, starting above it (0 below), ending at it (0 above), and negative ones
ZERO_GRIDS = [(-3, 0, 64), (-3, -32, 64), (-3, 1, 64), (-2, 5, 20), (-3, -64, 64), (0, -10, 9), (-1, -4, 100)]


@needs_native
@pytest.mark.parametrize(("e", "offset", "bins"), ZERO_GRIDS)
def test_zeros_inside_and_outside_the_window(e, offset, bins):
    x = _zeros_and_values(200_003, bins)
    assert _native_window(x, e, offset, bins) == _numpy_window(x, e, offset, bins)
    for channels_last in (False, True):
        for shape in ((16, 7, 893), (2000, 2, 25), (100, 1000, 1)):  # long runs, short runs, rows
            y = x[: math.prod(shape)].reshape(shape)
            y = y.transpose(1, 2).contiguous() if channels_last else y
            got = _fused(y, channels_last, e, offset, bins)
            assert got.histogram.tolist() == _numpy_window(y, e, offset, bins), (shape, channels_last)


@needs_native
@pytest.mark.parametrize("zero", [0.0, -0.0])
@pytest.mark.parametrize(("e", "offset", "bins"), ZERO_GRIDS[:3])
def test_nothing_but_zeros(zero, e, offset, bins):
    for shape in ((4, 8, 16), (3, 5, 4099), (1, 1, 1)):
        x = torch.full(shape, zero)
        expected = _numpy_window(x, e, offset, bins)
        assert sum(expected) == x.numel()
        assert _native_window(x, e, offset, bins) == expected
        assert _fused(x, False, e, offset, bins).histogram.tolist() == expected
        assert _fused(x.transpose(1, 2).contiguous(), True, e, offset, bins).histogram.tolist() == expected


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
def test_counts_across_many_joint_table_flushes(threads):
    # 5·2**20 values, none in 0's slot, on four bins: every pair lands on one of 16 joint entries, each
    # one table takes far more than 2**20 pairs
    g = torch.Generator().manual_seed(5)
    x = (torch.randint(4, 8, (5 * 2**20,), generator=g) / 4).float()  # 1.0, 1.25, 1.5, 1.75
    x[7] = 0.0
    expected = _numpy_window(x, -2, 0, 64)
    assert _native_window(x, -2, 0, 64, threads) == expected
    got = _fused(x.reshape(1, 1, -1), False, -2, 0, 64, threads)
    assert got.histogram.tolist() == expected


@needs_native
@pytest.mark.parametrize(("e", "offset", "bins"), ZERO_GRIDS)
def test_data_whose_share_of_zeros_changes_along_the_input(e, offset, bins):
    """Pieces with few and with many values in the slot of 0.0 take the kernel's two ways of counting
    (every slot in pairs, or that slot apart), switching back and forth at chunk boundaries; the counts
    must not depend on it."""
    g = torch.Generator().manual_seed(bins)
    pieces = []
    for k, n in enumerate((5000, 7777, 513, 20000, 3, 9000, 1025, 40000)):
        piece = torch.randn(n, generator=g) * 4
        if k % 2:
            piece = piece.relu()  # half zeros: the slot of 0.0 is counted apart
        pieces.append(piece)
    x = torch.cat(pieces)
    x[::997] = math.nan
    assert _native_window(x, e, offset, bins, threads=1) == _numpy_window(x, e, offset, bins)
    assert _native_window(x, e, offset, bins, threads=2) == _numpy_window(x, e, offset, bins)
    y = x[: 83 * 997].reshape(83, 1, 997)  # the fused count, block by block
    assert _fused(y, False, e, offset, bins).histogram.tolist() == _numpy_window(y, e, offset, bins)


# Channels-first runs of a multiple of 16 float32 values are counted during the reduction's first pass
# (runs_fast_counted in reduce_blocks.hpp), NaN/Inf blocks included: those go on to the masked path for
# their statistics and must not be counted twice. Normal data (few values in the zero slot: the pairs
# path without the split), a ReLU half, blocks of a long run, and a channel slice.
@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(64, 6, 64), (16, 5, 1024), (2, 3, 4096 + 512)])
@pytest.mark.parametrize("poisoned", [False, True])
def test_counts_taken_in_the_first_pass_match_numpy_and_leave_the_statistics_exact(threads, shape, poisoned):
    from ._reference import channel_stats_reference

    g = torch.Generator().manual_seed(shape[2])
    x = torch.randn(*shape, generator=g)
    x[: shape[0] // 2] = x[: shape[0] // 2].relu()
    if poisoned:
        x[0, 1, 5] = float("nan")
        x[-1, 2, -1] = -float("inf")
    for src in (x, x[:, 1:]):
        got = _fused(src, False, -3, -20, 64, threads)
        v = src.double().reshape(-1)
        v = v[torch.isfinite(v)]
        j = torch.floor(v / 8.0 ** -1) + 20
        expected = [int((j == b).sum()) for b in range(64)] + [int((j < 0).sum()), int((j >= 64).sum())]
        assert got.histogram.tolist() == expected
        ref = channel_stats_reference(src.transpose(1, 2).double().numpy(), (0.0,))
        np.testing.assert_array_equal(got.count.numpy(), ref["count"])
        np.testing.assert_array_equal(got.nan.numpy(), ref["nan"])
        np.testing.assert_allclose(got.m2.numpy(), ref["m2"], rtol=1e-6)
        # sample means of ~1-sized values near 0: float32 sums, hence an absolute tolerance
        np.testing.assert_allclose(got.sample_mean.numpy(), ref["sample_mean"], rtol=1e-6, atol=1e-6)
