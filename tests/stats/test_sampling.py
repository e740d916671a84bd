"""Per-batch sample budgets and the scratch buffers of the accumulators' per-batch work."""

import numpy as np
import pytest
import torch
from torch import nn

from layerscope._errors import ConfigError
from layerscope._probe import Probe
from layerscope.stats._sampling import DEFAULT_SAMPLES, check_samples, sample_step
from layerscope.stats._scratch import SMALL, Scratch
from layerscope.stats.covariance import ChannelCovariance
from layerscope.stats.spatial import SpatialDensity
from layerscope.stats.spectrum import ChannelSpectrum


@pytest.mark.parametrize(("n", "budget", "step"), [(64, 8, 8), (65, 8, 9), (9, 8, 2), (8, 8, 1), (3, 8, 1),
                                                   (64, None, 1), (64, 1, 64), (1, 1, 1)])
def test_sample_step_keeps_at_most_the_budget_evenly_spaced(n, budget, step):
    assert sample_step(n, budget) == step
    assert len(range(0, n, step)) <= (budget or n)


def test_check_samples_accepts_integers_and_none_only():
    assert check_samples("x", None) is None
    assert check_samples("x", 8) == 8 and check_samples("x", np.int64(3)) == 3
    for bad in (0, -1, 2.5, "8", True):
        with pytest.raises(ConfigError, match="x must be an integer of at least 1"):
            check_samples("x", bad)


@pytest.mark.parametrize("cls, option", [(ChannelSpectrum, "spectrum_samples"), (SpatialDensity, "spatial_samples"),
                                         (ChannelCovariance, "covariance_samples")])
def test_every_budgeted_accumulator_rejects_a_bad_budget(cls, option):
    assert cls().max_samples == DEFAULT_SAMPLES
    assert cls(**{option: None}).max_samples is None
    with pytest.raises(ValueError, match=option):
        cls(**{option: 0})


def test_scratch_is_reused_for_one_shape_and_grows_for_a_larger_one():
    s = Scratch()
    a = s.get((4, 5), torch.float32, torch.device("cpu"))
    assert s.get((4, 5), torch.float32, torch.device("cpu")).data_ptr() == a.data_ptr()
    b = s.get((2, 5), torch.float32, torch.device("cpu"))  # smaller: a view of the same storage
    assert b.data_ptr() == a.data_ptr() and b.shape == (2, 5) and b.is_contiguous()
    c = s.get((10, 10), torch.float32, torch.device("cpu"))  # larger: a new buffer
    assert c.shape == (10, 10) and c.is_contiguous()
    assert s.get((3,), torch.float64, torch.device("cpu")).dtype == torch.float64


def test_large_scratch_comes_from_the_shared_workspace_and_is_not_kept():
    s = Scratch()
    big = s.get((SMALL + 1,), torch.float32, torch.device("cpu"))
    assert big.numel() == SMALL + 1 and s._flat is None  # the accumulator holds no activation-sized buffer


def test_scratch_made_under_inference_mode_is_writable_outside_it():
    s = Scratch()
    with torch.inference_mode():
        s.get((3, 3), torch.float32, torch.device("cpu")).fill_(1.0)
    s.get((3, 3), torch.float32, torch.device("cpu")).add_(1.0)  # no "inference tensor" error


def test_the_three_budgets_read_the_same_samples_through_the_probe():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 5, padding=2))
    x = torch.randn(20, 2, 64)
    with torch.no_grad(), Probe(model, stats=("spectrum", "spatial", "covariance"), spectrum_samples=4,
                                spatial_samples=4, covariance_samples=4, nperseg=32) as probe:
        model(x)
        out = model(x)
    accs = probe._layers["0"].accumulators
    used = out[::5]  # ⌈20/4⌉ = 5: samples 0, 5, 10, 15 of each batch
    assert accs["spatial"].samples == 2 * 4
    assert accs["covariance"].count == 2 * 4 * 64
    assert int(accs["spectrum"].segments[0]) == 2 * 4 * 3  # 3 segments of 32 (hop 16) in 64 steps
    rows = used.transpose(1, 2).reshape(-1, 3).double().numpy()
    np.testing.assert_allclose(accs["covariance"].covariance().numpy(), np.cov(rows, rowvar=False, bias=True),
                               rtol=1e-5, atol=1e-6)
