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


def _cache_path() -> Path:
    from platformdirs import user_cache_dir

    what = repr(sorted(TRAIN.items())) + repr(sorted(DATA.items())) + repr((FREQUENCIES, LENGTH, NOISE))
    key = hashlib.sha256(what.encode() + repr(SequenceCNN()).encode()).hexdigest()[:16]
    root = Path(os.environ.get("LAYERSCOPE_CACHE_DIR") or user_cache_dir("layerscope"))
    return root / f"sequence-cnn-{key}.pt"


def _train(model: SequenceCNN, x: torch.Tensor, y: torch.Tensor) -> None:
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


def trained_sequence_cnn(cache: bool = True) -> SequenceCNN:
    """The demo model, trained on the training split (loaded from the cache when present)."""
    torch.manual_seed(TRAIN["seed"])
    model = SequenceCNN()
    path = _cache_path()
    if cache and path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception as exc:  # a corrupt or stale cache is rebuilt, never fatal
            log.warning("ignoring the cached demo weights at %s (%s); retraining", path, exc)
    x_train, y_train, _, _ = sequence_data()
    _train(model, x_train, y_train)
    if cache:
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError as exc:
            log.warning("could not cache the demo weights at %s: %s", path, exc)
    return model


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
