"""ChannelCovariance vs np.cov on the concatenated per-position rows."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.stats.covariance import ChannelCovariance, kept_channels

SPACE = Layout(1, Axis.SPACE)


def feed(acc, x, layout=SPACE):
    view = make_view(x, layout)
    acc.update(view, channel_reduce(view, (0.0,), "torch"))


def rows_of(x: np.ndarray) -> np.ndarray:
    """[N, C, ...] → [N·S, C]: every position of every sample is one observation."""
    return np.moveaxis(x.reshape(x.shape[0], x.shape[1], -1), 1, 2).reshape(-1, x.shape[1]).astype(np.float64)


def correlated(n, c, *spatial, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c, generator=gen, dtype=torch.float64)
    z = torch.randn(n, *spatial, c, generator=gen, dtype=torch.float64) @ mix + torch.arange(c) * 3.0
    return z.movedim(-1, 1).to(dtype).contiguous()  # (N, C, *spatial)


def test_matches_numpy_cov_float64():
    batches = [correlated(6, 5, 4, 3, seed=s) for s in range(4)]
    acc = ChannelCovariance()
    for b in batches:
        feed(acc, b)
    rows = rows_of(torch.cat(batches).numpy())
    assert acc.count == rows.shape[0]
    np.testing.assert_allclose(acc.mean.numpy(), rows.mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(rows, rowvar=False, bias=True), rtol=1e-10,
                               atol=1e-12)


def test_channels_last_sequence_view():
    x = correlated(5, 4, 9, seed=3)  # (N, C, T)
    acc = ChannelCovariance()
    feed(acc, x.transpose(1, 2).contiguous(), Layout(-1, Axis.TIME))  # (N, T, C)
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(rows_of(x.numpy()), rowvar=False, bias=True),
                               rtol=1e-10, atol=1e-12)


def test_float32_within_float32_precision():
    batches = [correlated(32, 8, 6, 6, seed=s, dtype=torch.float32) for s in range(3)]
    acc = ChannelCovariance(covariance_samples=None)
    for b in batches:
        feed(acc, b)
    ref = np.cov(rows_of(torch.cat(batches).numpy()), rowvar=False, bias=True)
    np.testing.assert_allclose(acc.covariance().numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_large_offset_small_spread():
    # 1e6 + N(0, 1e-3²): Σxy − ΣxΣy/n would keep no digit of the covariance; Chan's merge keeps them
    batches = [1e6 + 1e-3 * correlated(8, 3, 10, seed=s) for s in range(5)]
    acc = ChannelCovariance()
    for b in batches:
        feed(acc, b)
    rows = rows_of(torch.cat(batches).numpy())
    ref = np.cov(rows, rowvar=False, bias=True)
    np.testing.assert_allclose(acc.covariance().numpy(), ref, rtol=1e-4)
    naive = (rows.T @ rows - np.outer(rows.sum(0), rows.sum(0)) / len(rows)) / len(rows)
    assert np.abs(naive - ref).max() > 10 * np.abs(ref).max()  # the test can tell them apart


def test_rows_with_nonfinite_values_are_dropped():
    x = correlated(4, 3, 5, seed=5)
    x[0, 1, 2] = float("nan")
    x[3, 0, 4] = float("inf")
    acc = ChannelCovariance()
    feed(acc, x, Layout(1, Axis.TIME))
    rows = rows_of(x.numpy())
    ok = np.isfinite(rows).all(1)
    assert acc.dropped == 2 and acc.count == ok.sum()
    ref = np.cov(rows[ok], rowvar=False, bias=True)
    np.testing.assert_allclose(acc.covariance().numpy(), ref, rtol=1e-10)


def test_wide_layers_track_evenly_spaced_channels():
    assert kept_channels(10, 4).tolist() == [0, 3, 6, 9]
    assert kept_channels(3, 4).tolist() == [0, 1, 2]
    x = correlated(7, 10, 3, seed=6)
    acc = ChannelCovariance(covariance_max_channels=4)
    feed(acc, x, Layout(1, Axis.TIME))
    rows = rows_of(x.numpy())[:, [0, 3, 6, 9]]
    assert acc.channels == 10 and acc.index.tolist() == [0, 3, 6, 9]
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(rows, rowvar=False, bias=True), rtol=1e-10)


def test_channel_count_change_is_an_error():
    acc = ChannelCovariance()
    feed(acc, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="channel count changed"):
        feed(acc, torch.randn(2, 4, 4))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), cuts=st.lists(st.integers(1, 11), max_size=4), seed=st.integers(0, 2**16),
       offset=st.sampled_from([0.0, 1e3, -1e5]))
def test_merge_of_any_split_equals_one_pass(n, cuts, seed, offset):
    x = offset + correlated(n, 4, 3, seed=seed)
    whole = ChannelCovariance(covariance_samples=None)
    feed(whole, x, Layout(1, Axis.TIME))
    merged = ChannelCovariance(covariance_samples=None)
    for part in torch.tensor_split(x, sorted({c for c in cuts if c < n})):
        piece = ChannelCovariance(covariance_samples=None)
        feed(piece, part, Layout(1, Axis.TIME))
        merged.merge(ChannelCovariance.from_state_dict(piece.state_dict()))  # through serialisation too
    assert merged.count == whole.count == 3 * n
    torch.testing.assert_close(merged.mean, whole.mean, rtol=1e-12, atol=1e-12 * (1 + abs(offset)))
    scale = float(whole.comoment.abs().max())
    torch.testing.assert_close(merged.comoment, whole.comoment, rtol=1e-9, atol=1e-9 * scale)


def test_state_dict_round_trip_of_an_empty_and_a_full_accumulator():
    empty = ChannelCovariance.from_state_dict(ChannelCovariance(covariance_max_channels=8).state_dict())
    assert empty.max_channels == 8 and empty.mean is None
    acc = ChannelCovariance()
    feed(acc, correlated(3, 4, 5))
    again = ChannelCovariance.from_state_dict(acc.state_dict())
    assert torch.equal(again.comoment, acc.comoment) and again.count == acc.count
    empty.max_channels = acc.max_channels
    empty.merge(again)
    assert torch.equal(empty.comoment, acc.comoment)


def test_state_dict_is_a_copy_of_the_live_state():
    acc = ChannelCovariance()
    feed(acc, correlated(3, 4, 5, seed=1))
    state = acc.state_dict()
    before = {k: state[k].clone() for k in ("mean", "comoment")}
    feed(acc, correlated(3, 4, 5, seed=2))  # the accumulator updates mean and co-moment in place
    again = ChannelCovariance.from_state_dict(state)
    feed(again, correlated(3, 4, 5, seed=3))
    for k, v in before.items():
        assert torch.equal(state[k], v)


def test_channels_first_and_last_float32_agree_with_numpy():
    # the centred copy goes through a reused scratch buffer: consecutive layers of other shapes must not
    # disturb each other
    a, b = ChannelCovariance(), ChannelCovariance()
    xs = [correlated(8, 6, 20, seed=s, dtype=torch.float32) for s in range(3)]
    for x in xs:
        feed(a, x, Layout(1, Axis.TIME))
        feed(b, x.transpose(1, 2).contiguous(), Layout(-1, Axis.TIME))
    ref = np.cov(rows_of(torch.cat(xs).numpy()), rowvar=False, bias=True)
    for acc in (a, b):
        np.testing.assert_allclose(acc.covariance().numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# -- the per-batch row budget (covariance_samples) ----------------------------------------------------
def sampled(x, budget):
    """The samples a budget keeps: x[::⌈N/budget⌉] (all of them when N ≤ budget)."""
    return x if x.shape[0] <= budget else x[:: -(-x.shape[0] // budget)]


@pytest.mark.parametrize("budget", [8, 3, 1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_sampled_rows_match_numpy_on_exactly_those_rows(budget, channels_last):
    batches = [correlated(n, 5, 11, seed=s) + 4.0 for s, n in enumerate((40, 9, 3, 17))]
    acc = ChannelCovariance(covariance_samples=budget)
    for b in batches:
        if channels_last:
            feed(acc, b.transpose(1, 2).contiguous(), Layout(-1, Axis.TIME))
        else:
            feed(acc, b, Layout(1, Axis.TIME))
    rows = rows_of(torch.cat([sampled(b, budget) for b in batches]).numpy())
    assert acc.count == rows.shape[0] < sum(b.shape[0] for b in batches) * 11
    np.testing.assert_allclose(acc.mean.numpy(), rows.mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(rows, rowvar=False, bias=True), rtol=1e-10,
                               atol=1e-12)


def test_sampled_float32_with_an_offset_within_float32_precision():
    # centring on the rows' own mean (from the per-sample means) keeps float32 digits despite the offset
    batches = [100.0 + correlated(64, 6, 32, seed=s, dtype=torch.float32) for s in range(3)]
    acc = ChannelCovariance()  # the default budget: 8 samples of each batch
    for b in batches:
        feed(acc, b, Layout(1, Axis.TIME))
    rows = rows_of(torch.cat([b[::8] for b in batches]).double().numpy())
    ref = np.cov(rows, rowvar=False, bias=True)
    assert acc.count == 3 * 8 * 32
    np.testing.assert_allclose(acc.mean.numpy(), rows.mean(0), rtol=1e-6)
    np.testing.assert_allclose(acc.covariance().numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_sampled_and_capped_channels():
    x = correlated(30, 10, 4, seed=7)
    acc = ChannelCovariance(covariance_max_channels=4, covariance_samples=5)
    feed(acc, x, Layout(1, Axis.TIME))
    rows = rows_of(x[::6].numpy())[:, [0, 3, 6, 9]]
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(rows, rowvar=False, bias=True), rtol=1e-10)


def test_sampled_rows_with_nonfinite_values():
    x = correlated(12, 3, 5, seed=8)
    x[4, 1, 2] = float("nan")  # in a sampled sample (step 4: samples 0, 4, 8): its row is dropped
    x[5, 0, 0] = float("inf")  # in a sample that is not used: no effect
    acc = ChannelCovariance(covariance_samples=3)
    feed(acc, x, Layout(1, Axis.TIME))
    rows = rows_of(x[::4].numpy())
    ok = np.isfinite(rows).all(1)
    assert acc.dropped == 1 and acc.count == ok.sum() == 14
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(rows[ok], rowvar=False, bias=True), rtol=1e-10)


def test_merge_of_sampled_parts_equals_one_sampled_pass():
    batches = [correlated(n, 4, 6, seed=s) for s, n in enumerate((20, 13, 8, 30, 2))]
    one = ChannelCovariance()
    parts = [ChannelCovariance() for _ in range(2)]
    for i, b in enumerate(batches):
        feed(one, b, Layout(1, Axis.TIME))
        feed(parts[i % 2], b, Layout(1, Axis.TIME))
    merged = ChannelCovariance.from_state_dict(parts[0].state_dict())
    merged.merge(ChannelCovariance.from_state_dict(parts[1].state_dict()))
    assert merged.count == one.count and merged.max_samples == 8
    torch.testing.assert_close(merged.mean, one.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged.comoment, one.comoment, rtol=1e-10, atol=1e-10)


def test_budget_is_part_of_the_state_and_must_match_to_merge():
    acc = ChannelCovariance(covariance_samples=3)
    feed(acc, correlated(9, 3, 4))
    state = acc.state_dict()
    assert state["covariance_samples"] == 3 and ChannelCovariance.from_state_dict(state).max_samples == 3
    del state["covariance_samples"]  # a state saved before the option existed used every row
    assert ChannelCovariance.from_state_dict(state).max_samples is None
    other = ChannelCovariance(covariance_samples=None)
    feed(other, correlated(2, 3, 4))
    with pytest.raises(ValueError, match="covariance_samples"):
        acc.merge(other)


def test_updates_after_a_merge_and_a_change_of_precision_continue_exactly():
    # the state moves its reference on a merge (to the merged mean) and when the working precision
    # changes (float64 then float32 activations): later batches must still add up to one np.cov
    parts = [correlated(6, 5, 7, seed=s) for s in range(3)]
    later = [correlated(6, 5, 7, seed=s, dtype=torch.float32) + 50.0 for s in range(3, 5)]
    acc, other = ChannelCovariance(covariance_samples=None), ChannelCovariance(covariance_samples=None)
    feed(acc, parts[0], Layout(1, Axis.TIME))
    feed(other, parts[1], Layout(1, Axis.TIME))
    acc.merge(ChannelCovariance.from_state_dict(other.state_dict()))
    feed(acc, parts[2], Layout(1, Axis.TIME))
    for x in later:
        feed(acc, x.transpose(1, 2).contiguous(), Layout(-1, Axis.TIME))  # channels last, float32
        feed(acc, x, Layout(1, Axis.TIME))  # channels first
    rows = rows_of(torch.cat([*parts, *(x.double() for x in later for _ in range(2))]).numpy())
    assert acc.count == rows.shape[0]
    np.testing.assert_allclose(acc.mean.numpy(), rows.mean(0), rtol=1e-6)
    ref = np.cov(rows, rowvar=False, bias=True)
    np.testing.assert_allclose(acc.covariance().numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 7), (16, 13, 70), (9, 37, 64)])  # rows below, across and above a chunk
@pytest.mark.parametrize("strided", [False, True])
def test_native_update_matches_numpy_and_the_torch_path(dtype, channels_last, shape, strided):
    """The native kernel (csrc/covariance.cpp) against np.cov in float64 and the torch path: an offset of
    1e6 with a small spread, channel counts off the 4-block, chunk tails, non-contiguous views."""
    from layerscope.kernels._native_accumulate import available

    if not available():
        pytest.skip("native extension not built")
    n, c, s = shape
    gen = torch.Generator().manual_seed(c * s)
    batches = []
    for b in range(3):
        base = torch.randn(n, c, 2 * s if strided else s, generator=gen, dtype=torch.float64)
        x = (1e6 + 1e-2 * base).to(dtype) if b != 1 else (base * 5 - 3).to(dtype)
        batches.append(x[:, :, ::2] if strided else x)  # a non-contiguous view when strided
    layout = Layout(-1, Axis.TIME) if channels_last else Layout(1, Axis.TIME)
    native, torch_path = ChannelCovariance(covariance_samples=None), ChannelCovariance(covariance_samples=None,
                                                                                        backend="torch")
    for x in batches:
        data = x.transpose(1, 2) if channels_last else x  # (N, S, C): a transposed view
        feed(native, data, layout)
        feed(torch_path, data, layout)
    assert native._fast is not None  # the planned call took the later batches
    rows = np.concatenate([rows_of(x.numpy()) for x in batches])
    ref = np.cov(rows, rowvar=False, bias=True)
    assert native.count == torch_path.count == rows.shape[0]
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    scale = np.abs(ref).max()
    # float32 rows are shifted in float32 (as on the torch path): the mean within float32 rounding of |x|
    np.testing.assert_allclose(native.mean.numpy(), rows.mean(0), rtol=1e-12 if dtype == torch.float64 else 0,
                               atol=0 if dtype == torch.float64 else 1e-7 * np.abs(rows).max())
    np.testing.assert_allclose(native.covariance().numpy(), ref, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(native.covariance().numpy(), torch_path.covariance().numpy(), rtol=tol,
                               atol=tol * scale)
