"""The default demo: a small CNN trained on scikit-learn's handwritten digits (8×8, 10 classes).

Training is deterministic (fixed seed, single thread for the few seconds it takes) and cached in the
user cache directory, keyed by everything that changes the weights.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._io import atomic_write_bytes
from . import DEMOS, MODELS

log = logging.getLogger(__name__)

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


def _cache_path() -> Path:
    from platformdirs import user_cache_dir

    key = hashlib.sha256(repr(sorted(TRAIN.items())).encode() + repr(DigitsCNN()).encode()).hexdigest()[:16]
    root = Path(os.environ.get("LAYERSCOPE_CACHE_DIR") or user_cache_dir("layerscope"))
    return root / f"digits-cnn-{key}.pt"


def _train(model: DigitsCNN, x: torch.Tensor, y: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(TRAIN["seed"])
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN["lr"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-for-bit the same weights on every machine with this torch
    try:
        model.train()
        for _ in range(TRAIN["epochs"]):
            for idx in torch.randperm(len(y), generator=gen).split(TRAIN["batch_size"]):
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
        model.eval()


def trained_digits_cnn(cache: bool = True) -> DigitsCNN:
    """The demo CNN, trained on the digits training split (loaded from the cache when present)."""
    torch.manual_seed(TRAIN["seed"])
    model = DigitsCNN()
    path = _cache_path()
    if cache and path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception as exc:  # a corrupt or stale cache is rebuilt, never fatal
            log.warning("ignoring the cached demo weights at %s (%s); retraining", path, exc)
    x_train, y_train, _, _ = digits_data()
    _train(model, x_train, y_train)
    if cache:
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:
            log.warning("could not cache the demo weights at %s: %s", path, exc)
    return model


@MODELS.register("digits-cnn")
def digits_cnn(pretrained: bool = True) -> DigitsCNN:
    return trained_digits_cnn() if pretrained else DigitsCNN()


@DEMOS.register("digits-cnn")
def digits_demo() -> tuple[nn.Module, tuple[torch.Tensor, ...], str]:
    return trained_digits_cnn(), digits_data(), "sklearn digits (8×8 images), test split"


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())
