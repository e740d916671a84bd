"""ChannelMoments vs a float64 NumPy two-pass reference, on random and adversarial data."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.stats.moments import ChannelMoments

THRESHOLDS = (0.0, 0.5)


def feed(acc, x, backend="torch"):
    view = make_view(x, Layout(1, Axis.SPACE))
    acc.update(view, channel_reduce(view, acc.thresholds, backend))


def reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of the finite values of x [N, C, ...] in float64, by two passes."""
    rows = np.moveaxis(x.astype(np.float64), 1, 0).reshape(x.shape[1], -1)
    out = {k: [] for k in ("count", "mean", "m2", "min", "max", "zeros", "nan", "inf")}
    above = []
    for r in rows:
        f = r[np.isfinite(r)]
        mean = f.mean() if f.size else 0.0
        out["count"].append(f.size)
        out["mean"].append(mean)
        out["m2"].append(((f - mean) ** 2).sum())
        out["min"].append(f.min() if f.size else np.inf)
        out["max"].append(f.max() if f.size else -np.inf)
        out["zeros"].append((r == 0).sum())
        out["nan"].append(np.isnan(r).sum())
        out["inf"].append(np.isinf(r).sum())
        above.append([(f > t).sum() for t in THRESHOLDS])
    res = {k: np.array(v) for k, v in out.items()}
    res["above"] = np.array(above).T
    return res


def check(acc, ref, rtol=1e-9, atol=0.0):
    for key in ("count", "zeros", "nan", "inf", "above"):
        np.testing.assert_array_equal(getattr(acc, key).numpy(), ref[key], err_msg=key)
    for key in ("mean", "m2", "min", "max"):
        np.testing.assert_allclose(getattr(acc, key).numpy(), ref[key], rtol=rtol, atol=atol, err_msg=key)


def test_random_float64_batches():
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(5, 4, 3, 7, generator=gen, dtype=torch.float64) * 3 + 1 for _ in range(6)]
    acc = ChannelMoments(THRESHOLDS)
    for b in batches:
        feed(acc, b)
    check(acc, reference(torch.cat(batches).numpy()))


def test_random_float32_batches_within_float32_precision():
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 6, 33, generator=gen) * 2 - 5 for _ in range(5)]
    acc = ChannelMoments(THRESHOLDS)
    for b in batches:
        feed(acc, b)
    ref = reference(torch.cat(batches).numpy())
    check(acc, ref, rtol=1e-6, atol=1e-9)


def test_large_offset_small_spread():
    # 1e8 ± 1e-4: Σx² − (Σx)²/n would lose every digit of the variance here
    gen = torch.Generator().manual_seed(2)
    batches = [1e8 + 1e-4 * torch.randn(16, 3, 50, generator=gen, dtype=torch.float64) for _ in range(4)]
    acc = ChannelMoments(THRESHOLDS)
    for b in batches:
        feed(acc, b)
    x = torch.cat(batches).numpy()
    ref = reference(x)
    true_var = ref["m2"] / ref["count"]
    # A float64 mean near 1e8 is only known to ±ulp(1e8)/2 ≈ 7e-9, i.e. 1e-4 of the spread, so any
    # streaming merge of batch means carries ~1e-5 relative error in the between-batch part of M2.
    np.testing.assert_allclose(acc.variance.numpy(), true_var, rtol=2e-5)
    np.testing.assert_allclose(acc.mean.numpy(), ref["mean"], rtol=1e-15)
    # the textbook one-pass formula fails completely on the same data: the test can tell them apart
    rows = np.moveaxis(x, 1, 0).reshape(3, -1)
    naive = ((rows**2).sum(1) - rows.sum(1) ** 2 / rows.shape[1]) / rows.shape[1]
    assert np.all(np.abs(naive / true_var - 1) >= 0.99)  # 100% error or worse


def test_constant_channel_single_sample_and_nonfinite_values():
    x = torch.randn(1, 4, 10, dtype=torch.float64)
    x[0, 0] = 3.0  # constant channel: variance exactly 0
    x[0, 1, :3] = float("nan")
    x[0, 2, 0] = float("inf")
    x[0, 2, 1] = -float("inf")
    x[0, 3] = float("nan")  # no finite value at all
    acc = ChannelMoments(THRESHOLDS)
    feed(acc, x)
    ref = reference(x.numpy())
    check(acc, ref)
    assert acc.m2[0] == 0.0 and acc.count[3] == 0


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 12),
    cuts=st.lists(st.integers(1, 11), max_size=4),
    seed=st.integers(0, 2**16),
    offset=st.sampled_from([0.0, 1e3, -1e6]),
)
def test_merge_of_any_split_equals_one_pass(n, cuts, seed, offset):
    gen = torch.Generator().manual_seed(seed)
    x = offset + torch.randn(n, 3, 5, generator=gen, dtype=torch.float64)
    bounds = sorted({c for c in cuts if c < n})
    parts = torch.tensor_split(x, bounds)
    whole = ChannelMoments(THRESHOLDS)
    feed(whole, x)
    merged = ChannelMoments(THRESHOLDS)
    for part in parts:
        piece = ChannelMoments(THRESHOLDS)
        feed(piece, part)
        merged.merge(ChannelMoments.from_state_dict(piece.state_dict()))  # through serialisation too
    for key in ("count", "zeros", "above", "min", "max"):
        assert torch.equal(getattr(merged, key), getattr(whole, key)), key
    torch.testing.assert_close(merged.mean, whole.mean, rtol=1e-12, atol=1e-12 * (1 + abs(offset)))
    torch.testing.assert_close(merged.m2, whole.m2, rtol=1e-9, atol=1e-9)


def test_merge_rejects_mismatched_thresholds_and_channel_counts():
    a, b = ChannelMoments((0.0,)), ChannelMoments((1.0,))
    with pytest.raises(ValueError, match="thresholds"):
        a.merge(b)
    feed(a, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="channel count changed from 3 to 5"):
        feed(a, torch.randn(2, 5, 4))


def test_state_dict_is_a_snapshot_and_from_state_dict_owns_its_state():
    # CPU state is merged in place (native kernel): a snapshot must not follow later updates
    acc = ChannelMoments(THRESHOLDS)
    feed(acc, torch.randn(2, 3, 4, dtype=torch.float64))
    feed(acc, torch.randn(2, 3, 4, dtype=torch.float64))
    snap = acc.state_dict()
    frozen = {k: v.clone() for k, v in snap.items() if isinstance(v, torch.Tensor)}
    copy = ChannelMoments.from_state_dict(snap)
    feed(acc, torch.randn(5, 3, 4, dtype=torch.float64) + 10)
    feed(copy, torch.randn(1, 3, 4, dtype=torch.float64))
    assert all(torch.equal(snap[k], v) for k, v in frozen.items())
    assert acc.count.tolist() == [36] * 3 and copy.count.tolist() == [20] * 3
