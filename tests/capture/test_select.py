import pytest
from torch import nn

from layerscope._errors import LayerSelectionError
from layerscope.capture import select_modules


def _model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()), nn.Flatten(), nn.LazyLinear(3)
    )


def names(pairs):
    return [n for n, _ in pairs]


def test_default_selects_leaves_only():
    assert names(select_modules(_model())) == ["0", "1", "2.0", "2.1", "3", "4"]


def test_globs_regex_exact_types_and_exclude():
    m = _model()
    assert names(select_modules(m, "2.*")) == ["2.0", "2.1"]
    assert names(select_modules(m, "2")) == ["2"]  # an exact name selects a container
    assert names(select_modules(m, "re:2\\.\\d")) == ["2.0", "2.1"]
    assert names(select_modules(m, None, types=["ReLU"])) == ["1", "2.1"]
    assert names(select_modules(m, None, types=[nn.Conv2d])) == ["0", "2.0"]
    assert names(select_modules(m, "*", exclude="2.*")) == ["0", "1", "3", "4"]


def test_a_pattern_matching_nothing_lists_the_layers():
    with pytest.raises(LayerSelectionError, match=r"'conv\*' matches no module.*2\.0 \(Conv2d\)"):
        select_modules(_model(), "conv*")
    with pytest.raises(LayerSelectionError, match="not a valid regular expression"):
        select_modules(_model(), "re:(")
