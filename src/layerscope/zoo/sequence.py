"""A sequence demo whose spectra are known: sums of sinusoids at planted frequencies plus noise.

Each input is ``(1, T)``: every planted frequency ``f_i`` (cycles per sample) is present with
probability ½, with amplitude 1 and a random phase, on top of white Gaussian noise of standard
deviation ``NOISE``. The label is the bit mask of the frequencies present (``Σ 2^i``, 8 classes), so
the model must become frequency-selective. A small temporal CNN learns it in a few seconds; its early
layers' spectra show peaks at ``FREQUENCIES`` (``tests/zoo/test_sequence.py`` checks the peaks).

Data are deterministic (NumPy ``default_rng(seed)``); training is deterministic (fixed seed, one thread)
and cached in the user cache directory, keyed by everything that changes the weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import DEMOS, MODELS
from ._training import cache_path, cached_or_trained, train_classifier

FREQUENCIES = (0.05, 0.12, 0.3)  # cycles per sample (normalised frequency, Nyquist = 0.5)
LENGTH = 128
NOISE = 0.5
DATA = {"seed": 0, "train": 2048, "test": 512}
TRAIN = {"seed": 0, "epochs": 8, "lr": 3e-3, "batch_size": 64, "version": 1}


class SequenceCNN(nn.Module):
    """(B, 1, T) → (B, 2^len(FREQUENCIES)): filters over time, energy pooling, a per-step mixer."""

    def __init__(self, num_classes: int = 2 ** len(FREQUENCIES), width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 15, padding=7)  # (B, 1, T) -> (B, 16, T): band-pass filters
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv1d(width, width, 9, padding=4)  # (B, 16, T) -> (B, 16, T)
        self.act2 = nn.ReLU()
        self.mix = nn.Linear(width, 2 * width)  # per time step, channels last: (B, T, 16) -> (B, T, 32)
        self.act3 = nn.Tanh()
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.conv2(self.act1(self.conv1(x))))  # (B, 16, T)
        h = self.act3(self.mix(h.transpose(1, 2)))  # (B, T, 32)
        return self.head(h.mean(dim=1))  # (B, T, 32) -> (B, 32) -> (B, classes)


def make_signals(n: int, seed: int, frequencies: tuple[float, ...] = FREQUENCIES, length: int = LENGTH,
                 noise: float = NOISE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: ``x`` float32 ``(n, 1, length)``, ``y`` int64 bit mask of the frequencies present."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    present = rng.random((n, len(frequencies))) < 0.5  # (n, F)
    phase = rng.uniform(0, 2 * np.pi, (n, len(frequencies)))
    waves = np.sin(2 * np.pi * np.asarray(frequencies)[None, :, None] * t + phase[:, :, None])  # (n, F, T)
    x = (present[:, :, None] * waves).sum(axis=1) + noise * rng.standard_normal((n, length))  # (n, T)
    y = (present * (2 ** np.arange(len(frequencies)))).sum(axis=1)
    return torch.tensor(x[:, None, :], dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def sequence_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``; inputs ``(N, 1, LENGTH)``, labels in ``0 … 7``."""
    x_train, y_train = make_signals(DATA["train"], DATA["seed"])
    x_test, y_test = make_signals(DATA["test"], DATA["seed"] + 1)
    return x_train, y_train, x_test, y_test


def trained_sequence_cnn(cache: bool = True) -> SequenceCNN:
    """The demo model, trained on the training split (loaded from the cache when present)."""
    torch.manual_seed(TRAIN["seed"])
    model = SequenceCNN()
    path = cache_path("sequence-cnn", model, TRAIN, DATA, (FREQUENCIES, LENGTH, NOISE))

    def train(m: nn.Module) -> None:
        x_train, y_train, _, _ = sequence_data()
        train_classifier(m, x_train, y_train, TRAIN)

    return cached_or_trained(model, path, train, cache)


@MODELS.register("sequence-cnn")
def sequence_cnn(pretrained: bool = True) -> SequenceCNN:
    return trained_sequence_cnn() if pretrained else SequenceCNN()


@DEMOS.register("sequence-cnn")
def sequence_demo() -> tuple[nn.Module, tuple[torch.Tensor, ...], str]:
    freqs = ", ".join(f"{f:g}" for f in FREQUENCIES)
    return trained_sequence_cnn(), sequence_data(), f"sinusoids at {freqs} cycles/sample + noise, test split"


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())
