import pytest
import torch
from torch import nn

from layerscope._errors import ConfigError
from layerscope.capture.layout import Axis, Layout, infer_layout, make_view


@pytest.mark.parametrize(
    ("module", "shape", "channel_dim", "axis"),
    [
        (nn.Conv2d(3, 8, 3), (2, 8, 5, 5), 1, Axis.SPACE),
        (nn.Conv1d(3, 8, 3), (2, 8, 7), 1, Axis.TIME),
        (nn.BatchNorm2d(8), (2, 8, 5, 5), 1, Axis.SPACE),
        (nn.Linear(4, 6), (2, 10, 6), -1, Axis.TIME),  # [B, T, C] transformer-style
        (nn.LayerNorm(6), (2, 10, 6), -1, Axis.TIME),
        (nn.Linear(4, 6), (2, 6), -1, Axis.NONE),
    ],
)
def test_infer_layout_by_module_type(module, shape, channel_dim, axis):
    layout = infer_layout(module, torch.empty(shape))
    assert (layout.channel_dim, layout.axis) == (channel_dim, axis)


def test_elementwise_module_inherits_the_parent_layout():
    parent = Layout(-1, Axis.TIME)
    assert infer_layout(nn.GELU(), torch.empty(2, 10, 6), parent) == parent


def test_view_is_zero_copy_and_channels_are_right():
    x = torch.randn(2, 8, 5, 5)
    v = make_view(x, Layout(1, Axis.SPACE))
    assert v.data.data_ptr() == x.data_ptr()
    assert v.data.shape == (2, 8, 25) and v.spatial_shape == (5, 5) and v.num_channels == 8
    torch.testing.assert_close(v.spatial(), x)

    y = torch.randn(2, 10, 6)
    w = make_view(y, Layout(-1, Axis.TIME))
    assert w.data.data_ptr() == y.data_ptr() and w.channels_last and w.num_channels == 6
    torch.testing.assert_close(w.ncs(), y.transpose(1, 2))


def test_layout_parse_and_its_errors():
    assert Layout.parse("nsc:time") == Layout(-1, Axis.TIME)
    assert Layout.parse("ncs") == Layout(1, Axis.SPACE)
    with pytest.raises(ConfigError, match="unknown layout"):
        Layout.parse("xyz")
    with pytest.raises(ConfigError, match="unknown axis"):
        Layout.parse("ncs:depth")
