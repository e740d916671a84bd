"""SpatialDensity vs an explicit float64 loop over channels, cells and positions."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from layerscope._probe import Probe
from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.stats.spatial import SpatialDensity, cell_edges

SPACE = Layout(1, Axis.SPACE)


def feed(acc, x, layout=SPACE):
    view = make_view(x, layout)
    acc.update(view, channel_reduce(view, (0.0,), "torch"))


def reference_grid(x: np.ndarray, grid: int) -> np.ndarray:
    """Mean of x² over the finite values of each (channel, cell); x is [N, C, H, W] or [N, C, T]."""
    x = x.astype(np.float64)
    spatial = x.shape[2:]
    g = [min(grid, n) for n in spatial]
    out = np.zeros((x.shape[1], *g))
    for c in range(x.shape[1]):
        for cell in np.ndindex(*g):
            # cell i of an axis of length L in g cells: positions floor(i·L/g) … floor((i+1)·L/g) − 1
            sl = tuple(slice(i * n // k, (i + 1) * n // k) for i, n, k in zip(cell, spatial, g, strict=True))
            vals = x[(slice(None), c, *sl)].ravel()
            vals = vals[np.isfinite(vals)]
            out[(c, *cell)] = (vals**2).mean()
    return out


def test_cell_edges_partition_like_adaptive_pool_starts():
    assert cell_edges(10, 4) == [0, 2, 5, 7, 10]
    assert cell_edges(8, 8) == list(range(9))
    # the start of every cell is adaptive_avg_pool's start index floor(i·L/g)
    assert all(s == (i * 10) // 4 for i, s in enumerate(cell_edges(10, 4)[:-1]))


@pytest.mark.parametrize("shape, grid", [((3, 5, 10, 7), 4), ((2, 3, 8, 8), 8), ((4, 2, 3, 5), 8),
                                         ((5, 3, 17, 33), 8), ((2, 3, 1, 9), 8)])
@pytest.mark.parametrize("backend", ["torch", None])  # None: the native kernel where it is built
def test_image_grid_matches_loops(shape, grid, backend):
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(*shape, generator=gen, dtype=torch.float64) * (1 + torch.arange(shape[1]).reshape(
        1, -1, 1, 1)) for _ in range(3)]
    acc = SpatialDensity(spatial_grid=grid, backend=backend)
    for b in batches:
        feed(acc, b)
    ref = reference_grid(torch.cat(batches).numpy(), grid)
    assert acc.cells == ref.shape[1:]
    np.testing.assert_allclose(acc.energy().numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("length", [21, 32, 5])  # unequal cells, equal cells, one position per cell
@pytest.mark.parametrize("backend", ["torch", None])
def test_sequence_bins_channels_first_and_last(length, backend):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, length, generator=gen, dtype=torch.float64)  # (N, C, T)
    first = SpatialDensity(spatial_grid=8, backend=backend)
    last = SpatialDensity(spatial_grid=8, backend=backend)
    for part in (x[:2], x[2:5], x[5:]):  # the first batch sets up the state, the later ones add to it
        feed(first, part, Layout(1, Axis.TIME))
        feed(last, part.transpose(1, 2).contiguous(), Layout(-1, Axis.TIME))  # (N, T, C), a Linear's output
    ref = reference_grid(x.numpy(), 8)
    np.testing.assert_allclose(first.energy().numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(last.energy().numpy(), ref, rtol=1e-12)


def test_float32_activation_within_float32_precision():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 8, 16, 16, generator=gen) * 3 + 1
    acc = SpatialDensity(spatial_samples=None)
    feed(acc, x)
    np.testing.assert_allclose(acc.energy().numpy(), reference_grid(x.numpy(), 8), rtol=1e-6)


def test_dense_layer_has_one_cell_and_conv3d_sums_depth():
    x = torch.randn(5, 7, dtype=torch.float64)
    acc = SpatialDensity()
    feed(acc, x)
    assert acc.cells == ()
    np.testing.assert_allclose(acc.energy().numpy(), (x.numpy() ** 2).mean(0), rtol=1e-12)
    v = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64)  # (N, C, D, H, W)
    acc3 = SpatialDensity(spatial_grid=3)
    feed(acc3, v)
    folded = v.permute(0, 2, 1, 3, 4).reshape(8, 3, 6, 6)  # depth slices as extra samples
    np.testing.assert_allclose(acc3.energy().numpy(), reference_grid(folded.numpy(), 3), rtol=1e-12)


def test_nonfinite_values_are_left_out_and_counted():
    x = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    x[0, 0, 0, 0] = float("nan")
    x[1, 1, 7, 7] = float("inf")
    x[2, 1, 3, 4] = -float("inf")
    acc = SpatialDensity(spatial_grid=4)
    feed(acc, x)
    np.testing.assert_allclose(acc.energy().numpy(), reference_grid(x.numpy(), 4), rtol=1e-12)
    assert int(acc.nonfinite.sum()) == 3 and int(acc.nonfinite[0, 0, 0]) == 1


def test_batches_of_another_shape_are_skipped_and_counted():
    acc = SpatialDensity()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    feed(acc, x)
    feed(acc, torch.randn(5, 3, 6, 6))  # would not line up with the 8×8 cells: never raised in a hook
    assert acc.samples == 2 and acc.skipped == 5
    np.testing.assert_allclose(acc.energy().numpy(), reference_grid(x.numpy(), 8), rtol=1e-12)
    other = SpatialDensity()
    feed(other, torch.randn(1, 3, 6, 6))
    with pytest.raises(ValueError, match="would not align"):
        acc.merge(other)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 10), cuts=st.lists(st.integers(1, 9), max_size=3), seed=st.integers(0, 2**16),
       grid=st.integers(1, 6))
def test_merge_of_any_split_equals_one_pass(n, cuts, seed, grid):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 7, 5, generator=gen, dtype=torch.float64)
    whole = SpatialDensity(spatial_grid=grid, spatial_samples=None)
    feed(whole, x)
    merged = SpatialDensity(spatial_grid=grid, spatial_samples=None)
    for part in torch.tensor_split(x, sorted({c for c in cuts if c < n})):
        piece = SpatialDensity(spatial_grid=grid, spatial_samples=None)
        feed(piece, part)
        merged.merge(SpatialDensity.from_state_dict(piece.state_dict()))  # through serialisation too
    assert merged.samples == whole.samples == n
    torch.testing.assert_close(merged.energy(), whole.energy(), rtol=1e-12, atol=0)
    assert torch.equal(merged.nonfinite, whole.nonfinite)


def test_state_dict_round_trip_and_merging_into_empty():
    acc = SpatialDensity(spatial_grid=5, spatial_top_k=2)
    feed(acc, torch.randn(3, 4, 9, 9))
    again = SpatialDensity.from_state_dict(acc.state_dict())
    assert (again.grid, again.top_k, again.spatial_shape, again.samples) == (5, 2, (9, 9), 3)
    assert torch.equal(again.energy(), acc.energy())
    empty = SpatialDensity(spatial_grid=5)
    empty.merge(again)
    assert torch.equal(empty.energy(), acc.energy())
    with pytest.raises(ValueError, match="grid"):
        SpatialDensity(spatial_grid=4).merge(acc)


def test_through_the_probe_on_a_conv_model():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    x = torch.randn(16, 1, 10, 10)
    with Probe(model, stats=("spatial",), spatial_samples=None) as probe, torch.no_grad():
        model(x[:7])
        model(x[7:])
    acc = probe._layers["0"].accumulators["spatial"]
    with torch.no_grad():
        ref = reference_grid(model[0](x).numpy(), 8)
    np.testing.assert_allclose(acc.energy().numpy(), ref, rtol=1e-5)


@pytest.mark.parametrize("shape", [(16, 24), (15, 10), (32,), (12,)])  # cells of equal size, and not
def test_equal_and_unequal_cells_match_loops(shape):
    x = torch.randn(5, 3, *shape, dtype=torch.float64)
    acc = SpatialDensity(spatial_grid=8)
    feed(acc, x, SPACE if len(shape) == 2 else Layout(1, Axis.TIME))
    np.testing.assert_allclose(acc.energy().numpy(), reference_grid(x.numpy(), 8), rtol=1e-12)


def test_state_dict_is_a_copy_of_the_live_state():
    acc = SpatialDensity(spatial_grid=4)
    feed(acc, torch.randn(3, 2, 8, 8, dtype=torch.float64))
    state = acc.state_dict()
    before = state["energy_sum"].clone()
    feed(acc, torch.randn(3, 2, 8, 8, dtype=torch.float64))  # the accumulator adds in place
    assert torch.equal(state["energy_sum"], before)
    again = SpatialDensity.from_state_dict(state)
    feed(again, torch.randn(3, 2, 8, 8, dtype=torch.float64))
    assert torch.equal(state["energy_sum"], before)


# -- the per-batch sample budget (spatial_samples) ----------------------------------------------------
@pytest.mark.parametrize("budget", [8, 3])
@pytest.mark.parametrize("shape, layout", [((6, 10, 7), SPACE), ((4, 37), Layout(1, Axis.TIME)),
                                           ((37, 4), Layout(-1, Axis.TIME))])
@pytest.mark.parametrize("backend", ["torch", None])
def test_sampled_grid_matches_loops_over_exactly_the_samples_used(budget, shape, layout, backend):
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(n, *shape, generator=gen, dtype=torch.float64) + 1 for n in (40, 9, 5)]
    acc = SpatialDensity(spatial_grid=4, spatial_samples=budget, backend=backend)
    for b in batches:
        feed(acc, b, layout)
    used = torch.cat([b if b.shape[0] <= budget else b[:: -(-b.shape[0] // budget)] for b in batches])
    assert acc.samples == used.shape[0] < 54
    ncs = used.movedim(-1, 1) if layout.channel_dim == -1 else used
    np.testing.assert_allclose(acc.energy().numpy(), reference_grid(ncs.numpy(), 4), rtol=1e-12)


@pytest.mark.parametrize("backend", ["torch", None])
def test_sampled_float32_grid_within_float32_precision(backend):
    gen = torch.Generator().manual_seed(4)
    xs = [torch.randn(64, 16, 128, generator=gen) * 2 + 0.5 for _ in range(3)]  # the sequence demo's conv layers
    acc = SpatialDensity(backend=backend)  # the default budget: 8 samples
    last = SpatialDensity(backend=backend)  # and its Linear layers (channels last)
    for x in xs:
        feed(acc, x, Layout(1, Axis.TIME))
        feed(last, x.transpose(1, 2).contiguous(), Layout(-1, Axis.TIME))
    ref = reference_grid(torch.cat([x[::8] for x in xs]).numpy(), 8)
    np.testing.assert_allclose(acc.energy().numpy(), ref, rtol=1e-6)
    np.testing.assert_allclose(last.energy().numpy(), ref, rtol=1e-6)


def test_nonfinite_value_in_an_unused_sample_is_not_seen():
    x = torch.randn(12, 2, 8, dtype=torch.float64)
    x[1, 0, 3] = float("nan")  # sample 1 is not among 0, 4, 8
    x[4, 1, 7] = float("inf")  # sample 4 is
    acc = SpatialDensity(spatial_grid=4, spatial_samples=3)
    feed(acc, x, Layout(1, Axis.TIME))
    assert int(acc.nonfinite.sum()) == 1 and int(acc.nonfinite[1, 3]) == 1
    np.testing.assert_allclose(acc.energy().numpy(), reference_grid(x[::4].numpy(), 4), rtol=1e-12)


def test_spatial_budget_is_part_of_the_state_and_must_match_to_merge():
    acc = SpatialDensity(spatial_samples=2)
    feed(acc, torch.randn(6, 3, 8, 8))
    state = acc.state_dict()
    assert state["spatial_samples"] == 2 and SpatialDensity.from_state_dict(state).max_samples == 2
    del state["spatial_samples"]  # a state saved before the option existed used every sample
    assert SpatialDensity.from_state_dict(state).max_samples is None
    with pytest.raises(ValueError, match="spatial_samples"):
        acc.merge(SpatialDensity.from_state_dict(state))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("strided", [False, True])
def test_steady_state_native_path_matches_torch(dtype, channels_last, strided):
    """Many batches of one shape (the planned native call from the second batch on), with a non-finite
    batch, a restored state and a merge in between (they skip or replace the plan), against the torch
    path; an offset of 1e3 with a small spread."""
    gen = torch.Generator().manual_seed(11)
    xs = [(1e3 + 1e-2 * torch.randn(20, 6, 2 * 50 if strided else 50, generator=gen, dtype=torch.float64))
          .to(dtype) for _ in range(5)]
    xs = [x[:, :, ::2] if strided else x for x in xs]  # (N, C, T); a non-contiguous view when strided
    xs[2] = xs[2].clone()
    xs[2][1, 2, 3] = float("nan")
    layout = Layout(-1, Axis.TIME) if channels_last else Layout(1, Axis.TIME)
    native, ref = SpatialDensity(), SpatialDensity(backend="torch")
    for i, x in enumerate(xs):
        data = x.transpose(1, 2) if channels_last else x
        feed(native, data, layout)
        feed(ref, data, layout)
        if i == 1:
            assert native._fast is not None
        if i == 3:
            restored = SpatialDensity.from_state_dict(native.state_dict())
            native = SpatialDensity()
            native.merge(restored)
    assert native.samples == ref.samples
    assert torch.equal(native.nonfinite, ref.nonfinite)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(native.energy().numpy(), ref.energy().numpy(), rtol=tol)
