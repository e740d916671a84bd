"""Layout views: every activation seen as ``[N, C, S]`` (channels first) or ``[N, S, C]`` (channels last).

A view never copies a contiguous activation: it is a ``reshape`` of the tensor the hook received.
``axis`` says what the flattened positions ``S`` mean for the analyses that follow:
``"time"`` (a sequence or signal axis), ``"space"`` (height × width, …) or ``"none"`` (S = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from .._errors import ConfigError


class Axis(str, Enum):
    TIME = "time"
    SPACE = "space"
    NONE = "none"


@dataclass(frozen=True)
class Layout:
    """How to read one activation: which dim is the channel axis and what the other dims mean."""

    channel_dim: int  # 1 (channels first) or -1 (channels last); the batch dim is always 0
    axis: Axis

    @classmethod
    def parse(cls, spec: str) -> Layout:
        """``"ncs:time"``, ``"nsc:time"``, ``"ncs:space"``, ``"nc"`` … (for per-layer overrides)."""
        order, _, axis = spec.partition(":")
        dims = {"ncs": 1, "nc": 1, "nsc": -1}
        if order not in dims:
            raise ConfigError(f"unknown layout {spec!r}: use 'ncs', 'nsc' or 'nc', optionally ':time'/':space'")
        try:
            ax = Axis(axis) if axis else (Axis.NONE if order == "nc" else Axis.SPACE)
        except ValueError:
            raise ConfigError(f"unknown axis in layout {spec!r}: use 'time', 'space' or 'none'") from None
        return cls(dims[order], ax)


@dataclass(frozen=True)
class LayoutView:
    """A 3-D view of one activation.

    ``data`` is ``[N, C, S]`` when ``channels_last`` is False and ``[N, S, C]`` when it is True.
    ``spatial_shape`` is the shape of the S positions before flattening (``(H, W)``, ``(T,)`` or ``()``).
    """

    data: torch.Tensor
    channels_last: bool
    axis: Axis
    spatial_shape: tuple[int, ...]

    @property
    def num_samples(self) -> int:
        return self.data.shape[0]

    @property
    def num_channels(self) -> int:
        return self.data.shape[2] if self.channels_last else self.data.shape[1]

    @property
    def num_positions(self) -> int:
        return self.data.shape[1] if self.channels_last else self.data.shape[2]

    def ncs(self) -> torch.Tensor:
        """``[N, C, S]`` (a transposed, non-contiguous view when the activation is channels last)."""
        return self.data.transpose(1, 2) if self.channels_last else self.data

    def nsc(self) -> torch.Tensor:
        """``[N, S, C]`` (a transposed view when the activation is channels first)."""
        return self.data if self.channels_last else self.data.transpose(1, 2)

    def spatial(self) -> torch.Tensor:
        """``[N, C, *spatial_shape]`` — for analyses that need the positions unflattened."""
        return self.ncs().reshape(self.num_samples, self.num_channels, *self.spatial_shape)


# Modules whose output on a [B, C, ...] input keeps channels at dim 1.
_CHANNELS_FIRST = (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.GroupNorm,
    nn.Upsample,
    nn.PixelShuffle,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)
# Modules whose output puts channels last ([B, T, C], [B, C] …): features live in the last dim.
_CHANNELS_LAST = (
    nn.Linear,
    nn.Bilinear,
    nn.LayerNorm,
    nn.Embedding,
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
    nn.RNNBase,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())  # RMSNorm: torch >= 2.4


def infer_layout(module: nn.Module, tensor: torch.Tensor, parent_layout: Layout | None = None) -> Layout:
    """Guess the channel axis of ``module``'s output from its type.

    Element-wise modules (activations, dropout, identity …) inherit the layout of the layer that fed
    them (``parent_layout``), so a ReLU after a Conv is channels first and a GELU after a Linear is
    channels last. Without a parent, ``[B, C, ...]`` tensors of rank ≥ 3 are read channels first.
    """
    if tensor.dim() <= 2:
        return Layout(-1, Axis.NONE)
    if isinstance(module, _CHANNELS_LAST):
        return Layout(-1, Axis.TIME)
    if isinstance(module, _CHANNELS_FIRST):
        return Layout(1, Axis.TIME if tensor.dim() == 3 else Axis.SPACE)
    if parent_layout is not None:
        axis = parent_layout.axis if tensor.dim() >= 3 else Axis.NONE
        return Layout(parent_layout.channel_dim, axis)
    return Layout(1, Axis.TIME if tensor.dim() == 3 else Axis.SPACE)


def view_geometry(
    shape: tuple[int, ...], layout: Layout
) -> tuple[tuple[int, int, int], bool, Axis, tuple[int, ...]]:
    """What :func:`make_view` makes of a tensor of ``shape``: the 3-D shape of its view, ``channels_last``,
    the axis and the spatial shape (a hook computes it once per input shape, see ``Probe``)."""
    if len(shape) <= 2:  # [N, C]; [C] is an unbatched call (one sample), [] one value
        n, c = (1, 1) if not shape else (1, shape[0]) if len(shape) == 1 else shape
        return (n, 1, c), True, Axis.NONE, ()
    if layout.channel_dim == 1:
        spatial = tuple(shape[2:])
        return (shape[0], shape[1], math.prod(spatial)), False, layout.axis, spatial
    spatial = tuple(shape[1:-1])
    return (shape[0], math.prod(spatial), shape[-1]), True, layout.axis, spatial


def make_view(tensor: torch.Tensor, layout: Layout) -> LayoutView:
    """Reshape ``tensor`` to the 3-D view of ``layout`` (zero-copy when the tensor is contiguous)."""
    view_shape, channels_last, axis, spatial = view_geometry(tuple(tensor.shape), layout)
    return LayoutView(tensor.reshape(view_shape), channels_last, axis, spatial)
