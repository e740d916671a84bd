"""Baselines for cost comparisons: MLP, small CNN, LSTM, GRU, Transformer encoder (+ the ResNet-18s).

Each is small enough to profile on a laptop CPU. ``default_input(name)`` gives an example input for every
built-in model (a factory may also carry an ``input_shape`` attribute, which wins). Sequence models take
float features ``(B, T, F)``, so that one ``--input-shape`` describes every model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._errors import ConfigError
from . import MODELS

SEQ_LEN, SEQ_FEATURES, NUM_CLASSES = 32, 16, 10

# Batch dimension first; resolved by default_input_shape(). The ResNet entries describe resnet.py's models.
_INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "mlp": (1, 64),
    "cnn": (1, 3, 32, 32),
    "lstm": (1, SEQ_LEN, SEQ_FEATURES),
    "gru": (1, SEQ_LEN, SEQ_FEATURES),
    "transformer": (1, SEQ_LEN, SEQ_FEATURES),
    "resnet18": (1, 3, 224, 224),
    "resnet18-cifar": (1, 3, 32, 32),
    "digits-cnn": (1, 1, 8, 8),  # zoo/digits.py: 8×8 images
    "sequence-cnn": (1, 1, 128),  # zoo/sequence.py: LENGTH = 128 samples
}


class MLP(nn.Module):
    """(B, 64) → (B, 10): three linear layers (an 8×8 image, flattened)."""

    def __init__(self, in_features: int = 64, hidden: int = 128, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(in_features, hidden), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(hidden, hidden), nn.ReLU()
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x.flatten(1))))))


class SmallCNN(nn.Module):
    """(B, 3, H, W) → (B, 10): two conv–BN–ReLU–pool stages, global average pool, one linear layer."""

    def __init__(self, in_channels: int = 3, width: int = 32, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                 nn.ReLU(), nn.MaxPool2d(2))

        self.stage1 = stage(in_channels, width)  # -> (B, w, H/2, W/2)
        self.stage2 = stage(width, 2 * width)  # -> (B, 2w, H/4, W/4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stage2(self.stage1(x))).flatten(1))


class RecurrentClassifier(nn.Module):
    """(B, T, F) → (B, 10): a 2-layer LSTM or GRU, the last step's hidden state, one linear layer."""

    def __init__(self, cell: str, in_features: int = SEQ_FEATURES, hidden: int = 64, layers: int = 2,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(in_features, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # (B, T, H)
        return self.fc(out[:, -1])


class TransformerClassifier(nn.Module):
    """(B, T, F) → (B, 10): linear embedding + sinusoidal positions (Vaswani et al., 2017, §3.5),
    a 2-layer encoder (d=64, 4 heads, FFN 128), mean over time, one linear layer."""

    def __init__(self, in_features: int = SEQ_FEATURES, d_model: int = 64, heads: int = 4, ffn: int = 128,
                 layers: int = 2, max_len: int = 512, dropout: float = 0.1,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, d_model)
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.register_buffer("positions", pe, persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.fc = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.positions[: x.shape[1]]  # (B, T, F) -> (B, T, d)
        return self.fc(self.encoder(h).mean(dim=1))


@MODELS.register("mlp")
def mlp() -> MLP:
    return MLP()


@MODELS.register("cnn")
def cnn() -> SmallCNN:
    return SmallCNN()


@MODELS.register("lstm")
def lstm() -> RecurrentClassifier:
    return RecurrentClassifier("lstm")


@MODELS.register("gru")
def gru() -> RecurrentClassifier:
    return RecurrentClassifier("gru")


@MODELS.register("transformer")
def transformer() -> TransformerClassifier:
    return TransformerClassifier()


def default_input_shape(name: str, batch_size: int | None = None) -> tuple[int, ...]:
    """The example input shape of built-in model ``name`` (batch first), with ``batch_size`` if given."""
    shape = getattr(MODELS.get(name), "input_shape", None) or _INPUT_SHAPES.get(name)
    if shape is None:
        raise ConfigError(f"built-in model {name!r} has no default input; give one "
                          f"(--input-shape on the CLI)")
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        shape = (batch_size, *shape[1:])
    return tuple(shape)


def default_input(name: str, batch_size: int | None = None, *, seed: int = 0) -> torch.Tensor:
    """A reproducible standard-normal example input for built-in model ``name``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(default_input_shape(name, batch_size), generator=generator)
