"""ConnectionStrength vs explicit loops over the weight."""

import numpy as np
import pytest
import torch
from torch import nn

from layerscope._probe import Probe
from layerscope.stats.connectivity import MATRIX_MAX, TOP, ConnectionStrength


def reference(weight: torch.Tensor) -> np.ndarray:
    """[out, in]: the L2 norm of each kernel by a loop (|w| for a Linear weight)."""
    w = weight.detach().double().numpy()
    return np.array([[np.sqrt((w[o, i] ** 2).sum()) for i in range(w.shape[1])] for o in range(w.shape[0])])


@pytest.mark.parametrize("weight", [nn.Conv2d(3, 5, (3, 2)).weight, nn.Conv1d(4, 6, 5).weight,
                                    nn.Linear(7, 4).weight, nn.Linear(300, 200).weight])
def test_reduced_strengths_match_loops(weight):
    acc = ConnectionStrength(weight=weight.detach())
    s = reference(weight)
    assert acc.shape == s.shape and acc.kernel_size == tuple(weight.shape[2:])
    np.testing.assert_allclose(acc.out_norm.numpy(), np.linalg.norm(s, axis=1), rtol=1e-5)
    np.testing.assert_allclose(acc.in_norm.numpy(), np.linalg.norm(s, axis=0), rtol=1e-5)
    np.testing.assert_array_equal(acc.best_in_index.numpy(), s.argmax(1))
    np.testing.assert_array_equal(acc.best_out_index.numpy(), s.argmax(0))
    np.testing.assert_allclose(acc.top.numpy(), np.sort(s.ravel())[::-1][:TOP], rtol=1e-5)
    np.testing.assert_allclose(s.ravel()[acc.top_index.numpy()], acc.top.numpy(), rtol=1e-5)
    np.testing.assert_allclose(float(acc.total), s.sum(), rtol=1e-6)
    if s.size <= MATRIX_MAX:
        np.testing.assert_allclose(acc.matrix.numpy(), s, rtol=1e-5)
    else:
        assert acc.matrix is None  # a large weight is not copied: O(out + in) state


def test_no_weight_and_round_trip_and_merge():
    none = ConnectionStrength()
    none.update(None, None)  # activations are not needed
    assert none.shape is None and none.state_dict() == {}
    acc = ConnectionStrength(weight=torch.randn(3, 2, 3))
    again = ConnectionStrength.from_state_dict(acc.state_dict())
    assert again.shape == (3, 2) and again.kernel_size == (3,) and torch.equal(again.matrix, acc.matrix)
    empty = ConnectionStrength()
    empty.merge(again)
    assert torch.equal(empty.out_norm, acc.out_norm)
    with pytest.raises(ValueError, match="different models"):
        acc.merge(ConnectionStrength(weight=torch.randn(4, 2, 3)))


def test_probe_passes_the_weight():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    with Probe(model, stats=("connectivity",)) as probe, torch.no_grad():
        model(torch.randn(4, 2, 4, 4))
    layers = probe._layers
    assert layers["0"].accumulators["connectivity"].shape == (3, 2)
    assert layers["3"].accumulators["connectivity"].shape == (2, 12)
    assert layers["1"].accumulators["connectivity"].shape is None
