"""The default demo: a small CNN trained on scikit-learn's handwritten digits (8×8, 10 classes).

Training is deterministic (fixed seed, single thread for the few seconds it takes) and cached in the
user cache directory, keyed by everything that changes the weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import DEMOS, MODELS
from ._training import cache_path, cached_or_trained, train_classifier

TRAIN = {"seed": 0, "epochs": 15, "lr": 2e-3, "batch_size": 64, "test_fraction": 0.25, "version": 1}


class DigitsCNN(nn.Module):
    """(B, 1, 8, 8) → (B, 10)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)  # (B, 32, 8, 8) -> (B, 32, 4, 4)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.act3 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)  # (B, 64, 4, 4) -> (B, 64, 2, 2)
        self.fc1 = nn.Linear(256, 64)
        self.act4 = nn.Tanh()
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))
        x = self.pool2(self.act3(self.conv3(x))).flatten(1)  # (B, 256)
        return self.fc2(self.act4(self.fc1(x)))


def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: images scaled to [0, 1], shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.from_numpy(np.random.default_rng(TRAIN["seed"]).permutation(len(y)))
    n_test = round(len(y) * TRAIN["test_fraction"])
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def trained_digits_cnn(cache: bool = True) -> DigitsCNN:
    """The demo CNN, trained on the digits training split (loaded from the cache when present)."""
    torch.manual_seed(TRAIN["seed"])
    model = DigitsCNN()
    path = cache_path("digits-cnn", model, TRAIN)

    def train(m: nn.Module) -> None:
        x_train, y_train, _, _ = digits_data()
        train_classifier(m, x_train, y_train, TRAIN)

    return cached_or_trained(model, path, train, cache)


@MODELS.register("digits-cnn")
def digits_cnn(pretrained: bool = True) -> DigitsCNN:
    return trained_digits_cnn() if pretrained else DigitsCNN()


@DEMOS.register("digits-cnn")
def digits_demo() -> tuple[nn.Module, tuple[torch.Tensor, ...], str]:
    return trained_digits_cnn(), digits_data(), "sklearn digits (8×8 images), test split"


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())
