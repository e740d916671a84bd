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
    acc = ChannelCovariance()
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
    whole = ChannelCovariance()
    feed(whole, x, Layout(1, Axis.TIME))
    merged = ChannelCovariance()
    for part in torch.tensor_split(x, sorted({c for c in cuts if c < n})):
        piece = ChannelCovariance()
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
