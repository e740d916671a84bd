"""The sequence demo: planted frequencies must show up as spectral peaks of the early layers."""

import numpy as np
import pytest
import torch

from layerscope import zoo
from layerscope._probe import Probe
from layerscope.zoo.sequence import (
    FREQUENCIES,
    LENGTH,
    accuracy,
    make_signals,
    sequence_data,
    trained_sequence_cnn,
)

BIN = 1 / 64  # the Welch bin width at the default nperseg = 64


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    # module scope runs before conftest's per-test cache fixture: point the cache at the same place
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAYERSCOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        return trained_sequence_cnn()


@pytest.fixture(scope="module")
def probed(model):
    _, _, x_test, _ = sequence_data()
    with torch.inference_mode(), Probe(model, stats=("spectrum",)) as probe:
        for xb in x_test.split(64):
            model(xb)
    return probe.result()


def test_data_are_deterministic_and_labelled_by_the_frequencies_present():
    x1, y1 = make_signals(64, seed=3)
    x2, y2 = make_signals(64, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (64, 1, LENGTH) and int(y1.max()) < 2 ** len(FREQUENCIES)
    clean, labels = make_signals(200, seed=4, noise=0.0)
    spectrum = np.abs(np.fft.rfft(clean[:, 0].numpy(), axis=1))  # (200, 65)
    for i, f in enumerate(FREQUENCIES):
        k = round(f * LENGTH)
        present = ((labels >> i) & 1).bool().numpy()
        assert spectrum[present, k].min() > 10 * spectrum[~present, k].max()


def test_registered_and_trained(model):
    assert "sequence-cnn" in zoo.names()
    _, _, x_test, y_test = sequence_data()
    assert accuracy(model, x_test, y_test) >= 0.9


def test_early_layer_peaks_are_the_planted_frequencies(probed):
    conv1 = probed.layers["conv1"].stats["spectrum"]
    assert conv1["kind"] == "welch" and conv1["nperseg"] == 64
    assert min(abs(conv1["peak_frequency"] - f) for f in FREQUENCIES) <= BIN  # the highest peak
    found = [p["frequency"] for p in conv1["peaks"][: len(FREQUENCIES)]]  # the most prominent peaks
    for f in FREQUENCIES:
        assert min(abs(p - f) for p in found) <= BIN, (f, conv1["peaks"])
    assert conv1["state"] == "oscillatory"


def test_the_planted_frequencies_pass_the_first_nonlinearity(probed):
    act1 = probed.layers["act1"].stats["spectrum"]
    found = [p["frequency"] for p in act1["peaks"]]
    for f in FREQUENCIES:
        assert min(abs(p - f) for p in found) <= BIN, (f, act1["peaks"])


def test_every_layer_reports_a_state(probed):
    for name, layer in probed.layers.items():
        spec = layer.stats["spectrum"]
        if spec["kind"] == "welch":
            assert spec["state"] in ("dead", "saturated", "oscillatory", "scale-free", "smooth", "broadband",
                                     "mixed"), name
    assert probed.layers["mix"].meta["channels_last"]  # a (B, T, C) layer is analysed over T too
    assert probed.layers["mix"].stats["spectrum"]["kind"] == "welch"
