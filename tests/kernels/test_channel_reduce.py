"""The native fused channel reduction against a float64 NumPy reference of the ChannelStats contract:
layouts, strides, dtypes, adversarial values, NaN/Inf, thresholds, thread counts, empty inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerscope.capture.layout import Axis, LayoutView
from layerscope.kernels import channel_reduce
from layerscope.kernels._contract import TENSOR_FIELDS

from ._reference import (
    NATIVE_BUILT,
    as_float64,
    assert_stats_close,
    channel_stats_reference,
    exact_moments,
    needs_native,
)

THRESHOLDS = (0.0, 0.5, -1.25)


def view_of(x: torch.Tensor, channels_last: bool) -> LayoutView:
    return LayoutView(x, channels_last, Axis.SPACE, (x.shape[1] if channels_last else x.shape[2],))


def reference(view: LayoutView, thresholds=THRESHOLDS) -> dict[str, np.ndarray]:
    return channel_stats_reference(as_float64(view.nsc()), thresholds)


def native(view: LayoutView, thresholds=THRESHOLDS):
    return channel_reduce(view, thresholds, backend="native")


def poison(x: torch.Tensor) -> torch.Tensor:
    """Sprinkle NaN, ±Inf and exact zeros (fixed positions: every run of channel 0 gets some)."""
    flat = x.view(-1)
    flat[::13] = float("nan")
    flat[5::29] = float("inf")
    flat[7::31] = -float("inf")
    flat[3::11] = 0.0
    return x


# [N, C, S] shapes (channels first) / [N, S, C] (channels last): lengths that are not powers of two,
# S = 1, one sample, long runs cut into chunks, more channels than a tile, very short rows, samples of
# fewer rows than a chunk of 16.
SHAPES_NCS = [(4, 3, 37), (1, 2, 9001), (64, 5, 7), (3, 600, 1), (2, 1, 5000), (5, 7, 4096)]
SHAPES_NSC = [(4, 37, 3), (1, 3000, 5), (64, 1, 515), (3, 1, 1), (2, 129, 700), (1, 2, 1030), (16, 10, 300)]


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "channels_last,shape", [(False, s) for s in SHAPES_NCS] + [(True, s) for s in SHAPES_NSC]
)
def test_random_matches_reference(channels_last, shape, dtype):
    x = torch.randn(*shape, dtype=dtype) * 3 + 1
    view = view_of(x, channels_last)
    assert_stats_close(native(view), reference(view), rtol=1e-6 if dtype == torch.float32 else 1e-12)


@needs_native
@pytest.mark.parametrize(
    "channels_last,shape", [(False, (3, 4, 300)), (True, (3, 300, 4)), (True, (40, 1, 6))]
)
def test_nan_inf_counted_apart_from_moments(channels_last, shape):
    x = poison(torch.randn(*shape, dtype=torch.float64))
    view = view_of(x, channels_last)
    got = native(view)
    ref = reference(view)
    assert got.nan.sum() > 0 and got.inf.sum() > 0
    assert_stats_close(got, ref, rtol=1e-12)


@needs_native
def test_sample_without_finite_values_has_nan_mean_and_channel_without_any_is_empty():
    x = torch.randn(3, 2, 10, dtype=torch.float64)
    x[1, 0] = float("nan")  # sample 1, channel 0: nothing finite
    x[:, 1] = float("inf")  # channel 1: nothing finite at all
    got = native(view_of(x, False))
    assert torch.isnan(got.sample_mean[1, 0]) and not torch.isnan(got.sample_mean[0, 0])
    assert got.count[1] == 0 and got.mean[1] == 0 and got.m2[1] == 0
    assert got.min[1] == float("inf") and got.max[1] == -float("inf") and got.inf[1] == 30
    assert_stats_close(got, reference(view_of(x, False)), rtol=1e-12)


@needs_native
@pytest.mark.parametrize(
    "channels_last,shape", [(False, (2, 3, 5000)), (True, (4, 2500, 3)), (False, (1, 2, 30000))]
)
def test_float64_offset_1e8_spread_1e_4_keeps_the_variance(channels_last, shape):
    # A classic cancellation trap: Σx² − (Σx)²/n in float64 loses every digit here, and a float64
    # mean of such data is only good to ~1e-4 of the spread: the kernel must still get M2 right.
    torch.manual_seed(1)
    x = 1e8 + 1e-4 * torch.randn(*shape, dtype=torch.float64)
    view = view_of(x, channels_last)
    got = native(view)
    per_channel = view.nsc().reshape(-1, got.count.numel())
    for c in range(got.count.numel()):
        mean, m2 = exact_moments(per_channel[:, c].numpy())
        assert abs(got.mean[c].item() - mean) <= 1e-15 * abs(mean)
        assert abs(got.m2[c].item() - m2) <= 1e-9 * m2
    n = per_channel.shape[0]
    naive = (per_channel**2).sum(0) - per_channel.sum(0) ** 2 / n  # what the kernel must not do
    assert ((naive - got.m2).abs() / got.m2).max() > 1e-3


@needs_native
@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_large_offset_relative_error_below_1e_6(channels_last):
    x = (1e4 + torch.randn(8, 16, 777)).to(torch.float32)  # representable spread on a large offset
    if channels_last:
        x = x.transpose(1, 2).contiguous()
    view = view_of(x, channels_last)
    got, ref = native(view), reference(view)
    assert np.max(np.abs(got.m2.numpy() - ref["m2"]) / ref["m2"]) <= 1e-6
    assert np.max(np.abs(got.mean.numpy() - ref["mean"]) / np.abs(ref["mean"])) <= 1e-6


@needs_native
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_half_precision_inputs(dtype, channels_last):
    x = poison(torch.randn(5, 6, 333).to(dtype))
    if channels_last:
        x = x.transpose(1, 2).contiguous()
    view = view_of(x, channels_last)
    assert_stats_close(native(view), reference(view), rtol=1e-6)  # exact upcast, float32/64 accumulation


@needs_native
def test_thresholds_are_compared_exactly_in_float64():
    # float32(0.1) = 0.100000001490116… > 0.1: it is above the threshold 0.1, but not above itself.
    x = torch.tensor([0.1, 0.1, -0.5, 3.0], dtype=torch.float32).view(1, 1, 4)
    t32 = float(torch.tensor(0.1, dtype=torch.float32))
    got = native(view_of(x, False), (0.1, t32, 1e40, -1e40, float("inf")))
    assert got.above[:, 0].tolist() == [3, 1, 0, 4, 0]


@needs_native
def test_no_thresholds_gives_an_empty_table():
    got = native(view_of(torch.randn(2, 3, 4), False), ())
    assert got.above.shape == (0, 3) and got.above.dtype == torch.int64


@needs_native
@pytest.mark.parametrize("case", ["transposed", "sliced", "expanded", "permuted4d"])
def test_non_contiguous_inputs_are_read_in_place(case):
    base = torch.randn(6, 40, 10, dtype=torch.float64)
    if case == "transposed":  # channels-last memory seen as [N, C, S]
        view = LayoutView(base.transpose(1, 2), False, Axis.SPACE, (40,))
    elif case == "sliced":  # every other position and channel
        view = LayoutView(base[:, ::2, ::3], False, Axis.SPACE, (4,))
    elif case == "expanded":  # stride 0 along S
        view = LayoutView(base[:, :, :1].expand(6, 40, 9), False, Axis.SPACE, (9,))
    else:  # a channels_last conv activation [N, C, H, W] → [N, C, H·W] without a copy
        img = torch.randn(4, 5, 6, 7, dtype=torch.float64).to(memory_format=torch.channels_last)
        view = LayoutView(
            img.view(4, 5, 42) if img.is_contiguous() else img.flatten(2), False, Axis.SPACE, (6, 7)
        )
    assert_stats_close(native(view), reference(view), rtol=1e-12)


# Channels-last tiles of 256 channels are dealt to channel groups when the batch has few units: with
# 5 to 7 tiles and a group count that does not divide them, a last group used to start past the last
# channel and fail ("cannot create std::vector larger than max_size()"; 17 of 735 shapes in a sweep).
@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(8, 32, 1040), (1, 200, 1300), (3, 64, 1040), (2, 200, 1537), (8, 64, 1300)])
def test_channels_last_tiles_in_uneven_channel_groups(shape, threads):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    view = view_of(x, True)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        got = native(view)
    finally:
        torch.set_num_threads(old)
    assert_stats_close(got, reference(view), rtol=1e-6)


@needs_native
@pytest.mark.parametrize(
    "channels_last,shape", [(False, (16, 8, 3000)), (True, (16, 500, 300)), (False, (1, 1, 50000))]
)
def test_thread_counts_agree(channels_last, shape):
    x = torch.randn(*shape)
    view = view_of(x, channels_last)
    old = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            results.append(native(view))
        again = native(view)
    finally:
        torch.set_num_threads(old)
    for r in results[1:]:
        for f in ("count", "zeros", "above", "nan", "inf", "min", "max"):
            assert torch.equal(getattr(r, f), getattr(results[0], f)), f
        for f in ("mean", "m2", "sample_mean"):
            torch.testing.assert_close(getattr(r, f), getattr(results[0], f), rtol=1e-12, atol=1e-12)
    for f in ("mean", "m2", "sample_mean"):  # same thread count: bitwise reproducible
        assert torch.equal(getattr(again, f), getattr(results[-1], f)), f


def assert_same_bits(a, b, where) -> None:
    """Every field of two ChannelStats equal bit for bit (NaN where the other has NaN)."""
    for f in TENSOR_FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert torch.equal(x.nan_to_num(7.0), y.nan_to_num(7.0)), (where, f)


@needs_native
def test_a_call_does_not_depend_on_the_calls_before_it():
    """Each thread keeps its scratch buffers between calls: a result must not see what an earlier call of
    another plan (other channels, tiles, boxes, a masked tile with NaN, half inputs) left in them."""
    torch.manual_seed(3)
    cases = [
        view_of(torch.randn(8, 32, 1040), True),
        view_of(poison(torch.randn(4, 37, 3)), True),
        view_of(torch.randn(64, 5, 7), False),
        view_of(poison(torch.randn(5, 7, 4096)), False),
        view_of(torch.randn(16, 10, 300).to(torch.bfloat16), True),
        view_of(torch.randn(64, 512, 16), False),
    ]
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = [native(v) for v in cases]
        for k in range(len(cases)):  # every case again, after each of the others
            for j in range(len(cases)):
                native(cases[j])
                again = native(cases[k])
                assert_same_bits(again, first[k], (k, j))
    finally:
        torch.set_num_threads(old)


@needs_native
def test_calls_from_several_python_threads_at_once_match_calls_one_by_one():
    """The kernel releases the GIL and its scratch belongs to the calling thread: calls running at the
    same time from several Python threads (each its own OpenMP team) must not share it."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(4)
    cases = [
        view_of(torch.randn(8, 32, 1040), True),
        view_of(torch.randn(64, 5, 70), False),
        view_of(poison(torch.randn(16, 10, 300)), True),
        view_of(torch.randn(64, 300, 16), False),
    ]
    one_by_one = [native(v) for v in cases]
    with ThreadPoolExecutor(len(cases)) as pool:
        for _ in range(5):
            together = list(pool.map(native, cases))
            for k, (a, b) in enumerate(zip(together, one_by_one, strict=True)):
                assert_same_bits(a, b, k)


@pytest.mark.parametrize("backend", [
    pytest.param("native", marks=[pytest.mark.native, pytest.mark.skipif(not NATIVE_BUILT, reason="native not built")]),
    "torch",
])
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0), (2, 0, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_empty_inputs(shape, channels_last, backend):
    x = torch.randn(*shape)
    got = channel_reduce(view_of(x, channels_last), THRESHOLDS, backend=backend)
    c = shape[2] if channels_last else shape[1]
    assert got.count.shape == (c,) and got.above.shape == (len(THRESHOLDS), c)
    # the contract's values for no finite value
    for f, value in (("count", 0), ("mean", 0.0), ("m2", 0.0), ("min", math.inf), ("max", -math.inf),
                     ("zeros", 0), ("above", 0), ("nan", 0), ("inf", 0)):
        assert torch.all(getattr(got, f) == value), f
    assert got.sample_mean.shape == (shape[0], c) and torch.all(torch.isnan(got.sample_mean))


@needs_native
def test_zero_copy_and_gradients_untouched():
    x = torch.randn(2, 3, 50, requires_grad=True)
    got = native(view_of(x, False))  # a tensor that requires grad is read without a copy or a graph
    assert got.mean.grad_fn is None
    assert_stats_close(got, reference(view_of(x.detach(), False)), rtol=1e-6)


# A sample's mean must not depend on the batch it is reduced in (its neighbours, the batch size, how
# the work was cut): the same samples inside different batches give bitwise-equal sample_mean.
@needs_native
@pytest.mark.parametrize(
    "channels_last,s,c",
    [(False, 100, 6), (False, 5000, 2), (False, 9000, 1), (True, 30, 64), (True, 700, 64), (True, 3, 300),
     (True, 1, 300), (True, 48, 300), (True, 10, 300)],  # 48: whole chunks of 16 rows per sweep (tile_pass1/2),
    # 10: samples read in chunks of their own rows, 3 and 1: samples summed apart; 300: two tiles
)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_mean_does_not_depend_on_the_batch(channels_last, s, c, threads, dtype):
    g = torch.Generator().manual_seed(s + c)
    full = (torch.randn(12, s, c, generator=g, dtype=torch.float64) * 1e3 + 1e4).to(dtype)  # [N, S, C]
    full = full if channels_last else full.transpose(1, 2).contiguous()  # [N, C, S] channels first
    poisoned = full.clone()
    poisoned[0].view(-1)[::7] = float("nan")  # a neighbour with NaN must not change the others
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        whole = native(view_of(full, channels_last)).sample_mean  # [N, C]
        for batch in (full[5:6], full[3:8], full[1:], full[[7, 2, 9]], poisoned[:6]):
            got = native(view_of(batch.contiguous(), channels_last)).sample_mean
            rows = _rows_of(batch, full)
            for r, n in enumerate(rows):
                if n is not None:
                    assert torch.equal(got[r], whole[n]), f"sample {n} in a batch of {len(batch)}"
    finally:
        torch.set_num_threads(old)


def _rows_of(batch: torch.Tensor, full: torch.Tensor) -> list[int | None]:
    """Index in ``full`` of each sample of ``batch`` (None for a sample that differs from all)."""
    out = []
    for b in batch:
        hits = [n for n in range(len(full)) if torch.equal(b, full[n])]
        out.append(hits[0] if hits else None)
    return out


# The float32 path keeps lane partials in float32 for at most 16 values per lane before adding them
# into float64: long runs on a large offset must still give M2 and the mean to 1e-6 (float64 truth).
@needs_native
@pytest.mark.parametrize("channels_last,shape", [(False, (2, 3, 200_000)), (True, (2, 50_000, 7))])
def test_float32_long_runs_on_an_offset_stay_within_1e_6(channels_last, shape):
    g = torch.Generator().manual_seed(7)
    x = (3e3 + 0.5 * torch.randn(*shape, generator=g, dtype=torch.float64)).to(torch.float32)
    view = view_of(x, channels_last)
    got, ref = native(view), reference(view)
    assert np.max(np.abs(got.m2.numpy() - ref["m2"]) / ref["m2"]) <= 1e-6
    assert np.max(np.abs(got.mean.numpy() - ref["mean"]) / np.abs(ref["mean"])) <= 1e-6
    rsm = ref["sample_mean"]
    assert np.max(np.abs(got.sample_mean.numpy() - rsm) / np.abs(rsm)) <= 1e-6


# Channels-first blocks take their moments in pass 1, around the mean of 16 values from the middle of
# their first run (first_pass_shift in reduce_blocks.hpp; a long run's blocks are 4096 values), and are
# summed again around their own mean when that shift lies over a standard deviation away: cancellation
# would cost the float32 lane sums a factor 1 + z² of their accuracy. Here those 16 values of sample 0
# sit k standard deviations off an offset: k = 0.5 keeps the first pass, k = 1e3 must not (its moments
# would be off by ~1e-4 of M2).
@needs_native
@pytest.mark.parametrize("k", [0.5, 3.0, 1e3])
@pytest.mark.parametrize("shape", [(64, 4, 16), (64, 4, 64), (16, 3, 256), (4, 2, 5000), (1, 3, 30000)])
def test_float32_first_pass_moments_when_the_first_values_are_off_the_mean(shape, k):
    g = torch.Generator().manual_seed(11)
    x = (1e3 + torch.randn(*shape, generator=g, dtype=torch.float64)).to(torch.float32)
    mid = (min(shape[2], 4096) - 16) // 2
    x[0, :, mid : mid + 16] = 1e3 + k
    view = view_of(x, False)
    got, ref = native(view), reference(view)
    assert np.max(np.abs(got.m2.numpy() - ref["m2"]) / ref["m2"]) <= 1e-6
    assert np.max(np.abs(got.mean.numpy() - ref["mean"]) / np.abs(ref["mean"])) <= 1e-6
    np.testing.assert_allclose(got.sample_mean.numpy(), ref["sample_mean"], rtol=1e-6)


# Channels-last tiles take their moments in one read too, around the mean of the 16 rows in the middle of
# the tile (tile_shift in reduce_blocks.hpp; a tile is min(C, 256) channels by 32768 // that many rows:
# one sample's chunk, or whole samples), and are read again around their channels' means when the shift
# of any channel lies over a standard deviation from its mean. Here channel 0's 16 middle rows of the
# first tile sit k standard deviations off an offset. A tile of R rows loses at most a factor R/16 to the
# cancellation, so the tiles are tall (few channels): without the second read, k = 100 and 1e4 give M2
# 0.9–2.3e-6 off on these shapes.
@needs_native
@pytest.mark.parametrize("k", [0.5, 100.0, 1e4])
@pytest.mark.parametrize(
    "shape", [(1, 2048, 16), (1, 4096, 8), (200, 16, 16), (5000, 1, 8), (1000, 4, 8), (8, 32, 128)]
)
def test_float32_channels_last_one_read_when_the_middle_rows_are_off_the_mean(shape, k):
    n, s, c = shape
    g = torch.Generator().manual_seed(13)
    x = (1e3 + torch.randn(*shape, generator=g, dtype=torch.float64)).to(torch.float32)  # [N, S, C]
    rows = 32768 // c  # rows of a tile
    if s >= rows:  # a chunk of sample 0
        block = x[0, :rows]
    else:  # whole samples: rows // s of them (all when s == 1)
        block = x[: min(n, rows // s if s > 1 else rows)].reshape(-1, c)
    mid = (len(block) - 16) // 2
    block[mid : mid + 16, 0] = 1e3 + k  # a view: writes x
    view = view_of(x, True)
    got, ref = native(view), reference(view)
    assert np.max(np.abs(got.m2.numpy() - ref["m2"]) / ref["m2"]) <= 1e-6
    assert np.max(np.abs(got.mean.numpy() - ref["mean"]) / np.abs(ref["mean"])) <= 1e-6
    np.testing.assert_allclose(got.sample_mean.numpy(), ref["sample_mean"], rtol=1e-6)


# Finite float32 values whose squares (or sums) overflow float32: the block is redone in float64.
@needs_native
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("scale", [1e20, 1e37])
def test_float32_values_whose_squares_overflow_float32_are_exact(channels_last, scale):
    g = torch.Generator().manual_seed(3)
    x = (scale * torch.randn(3, 4, 300, generator=g, dtype=torch.float64)).to(torch.float32)
    x = x.transpose(1, 2).contiguous() if channels_last else x
    view = view_of(x, channels_last)
    got = native(view)
    assert np.all(np.isfinite(got.m2.numpy())) and np.all(np.isfinite(got.mean.numpy()))
    assert_stats_close(got, reference(view), rtol=1e-6)


# Short channels-first runs (S ≤ 32) are read in boxes of channels × samples (run_box in reduce.cpp),
# float32 runs of at most 64 values in a loop over runs (short_runs_fast; also the last block of a long
# run): shapes on both sides of these sizes, one sample and many, channel-sliced views, NaN/Inf.
@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize(
    "shape",
    [
        (64, 512, 1), (1, 512, 3), (64, 300, 3), (64, 512, 16), (1, 77, 16), (64, 200, 32), (3, 9, 31),
        (64, 128, 49), (1, 512, 64), (64, 64, 64), (3, 5, 33), (64, 32, 100), (3, 2, 4101),
    ],
)
def test_short_runs_in_boxes_match_reference(shape, dtype):
    x = (torch.randn(*shape, dtype=torch.float64) * 3 + 1).to(dtype)
    view = view_of(x, False)
    rtol = {torch.float32: 1e-6, torch.float64: 1e-12, torch.float16: 1e-6}[dtype]
    assert_stats_close(native(view), reference(view), rtol=rtol)


@needs_native
@pytest.mark.parametrize("shape", [(64, 512, 16), (5, 40, 3), (64, 100, 32), (8, 20, 49), (2, 3, 4100)])
def test_short_runs_with_nan_inf_and_channel_slices(shape):
    x = poison(torch.randn(*shape) * 2 - 1)
    view = view_of(x, False)
    assert_stats_close(native(view), reference(view), rtol=1e-6)
    sliced = torch.randn(shape[0], shape[1] * 2, shape[2])[:, 1::2]  # channel stride 2·S
    view = view_of(sliced, False)
    assert_stats_close(native(view), reference(view), rtol=1e-6)


@needs_native
@pytest.mark.parametrize("s,c", [(16, 512), (3, 300), (32, 64), (49, 40), (64, 64)])
@pytest.mark.parametrize("threads", [1, 2])
def test_short_runs_sample_mean_does_not_depend_on_the_batch(s, c, threads):
    full = torch.randn(64, c, s) * 1e3 + 1e4
    poisoned = full.clone()
    poisoned[0].view(-1)[::7] = float("nan")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        whole = native(view_of(full, False)).sample_mean
        for lo, hi in ((5, 6), (3, 40), (1, 64)):
            got = native(view_of(full[lo:hi].contiguous(), False)).sample_mean
            assert torch.equal(got, whole[lo:hi])
        got = native(view_of(poisoned[:6], False)).sample_mean
        assert torch.equal(got[1:], whole[1:6])
    finally:
        torch.set_num_threads(old)


@needs_native
@pytest.mark.parametrize("channels_last", [False, True])
def test_one_position_per_sample_with_sample_gaps(channels_last):
    """[N, C] rows of a wider buffer (a Linear output sliced by channel): S = 1 and the samples not
    adjacent, read as whole-sample blocks; NaN rows and columns among them."""
    base = torch.randn(70, 600, dtype=torch.float32) * 2 + 0.5
    base[5, :], base[:, 47] = float("nan"), float("inf")  # sample 5, channel 7 of the slice
    rows = base[:, 40:552]  # [70, 512], sample stride 600
    x = rows.unsqueeze(-1) if not channels_last else rows.unsqueeze(1)  # [N, C, 1] or [N, 1, C]
    view = view_of(x, channels_last)
    got = native(view)
    assert_stats_close(got, reference(view), rtol=1e-6)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            # a sample's mean is its one value (NaN where it is not finite), whatever its block
            torch.testing.assert_close(native(view).sample_mean, got.sample_mean, rtol=0, atol=0, equal_nan=True)
    finally:
        torch.set_num_threads(old)
    expected = torch.where(torch.isfinite(rows), rows, float("nan")).double()
    torch.testing.assert_close(got.sample_mean, expected, rtol=0, atol=0, equal_nan=True)
