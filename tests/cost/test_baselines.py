"""The zoo's baselines: every built-in model has a default input, and the baselines run on it."""

from __future__ import annotations

import pytest
import torch

from layerscope import ConfigError, zoo
from layerscope.cost import count_parameters
from layerscope.zoo.baselines import default_input, default_input_shape


@pytest.mark.parametrize("name", zoo.names())
def test_every_builtin_model_has_a_default_input(name):
    shape = default_input_shape(name, batch_size=4)
    assert shape[0] == 4 and all(d > 0 for d in shape)


@pytest.mark.parametrize("name", ["mlp", "cnn", "lstm", "gru", "transformer"])
def test_baselines_run_on_their_default_input(name):
    model = zoo.build(name)
    x = default_input(name, batch_size=3)
    assert torch.equal(x, default_input(name, batch_size=3))  # reproducible
    assert model(x).shape == (3, 10)
    assert 10_000 < count_parameters(model).total < 100_000  # small enough for a laptop CPU


def test_bad_batch_size_and_unknown_model():
    with pytest.raises(ConfigError, match="at least 1"):
        default_input_shape("mlp", batch_size=0)
    with pytest.raises(ConfigError, match="unknown built-in model"):
        default_input_shape("nope")
