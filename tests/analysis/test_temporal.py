"""Spectral features and operational states on signals that are each class by construction."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

from layerscope._errors import ConfigError
from layerscope._probe import Probe
from layerscope.analysis import LAYER_ANALYSES, MODEL_ANALYSES
from layerscope.analysis.psd_features import (
    Spectra,
    band_power,
    default_bands,
    dominant_peak,
    parse_bands,
    power_law_fit,
    spectral_centroid,
    spectral_entropy,
    total_power,
)
from layerscope.analysis.temporal import STATES, analyse_spectrum
from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.report.result import to_jsonable
from layerscope.stats.spectrum import ChannelSpectrum

N, T = 16, 1024


def pink_noise(rng, n, length):
    """1/f noise by construction: random phases, amplitude ∝ f^(−1/2) (power ∝ 1/f)."""
    f = np.fft.rfftfreq(length)
    amp = np.zeros_like(f)
    amp[1:] = f[1:] ** -0.5
    z = (rng.standard_normal((n, f.size)) + 1j * rng.standard_normal((n, f.size))) * amp
    return np.fft.irfft(z, n=length)


def synthetic_channels(seed=0):
    """(N, C, T) with one class per channel, and the class each channel is by construction."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    signals = {
        "broadband": rng.standard_normal((N, T)),  # white noise
        "oscillatory": np.sin(2 * np.pi * 0.12 * t + rng.uniform(0, 2 * np.pi, (N, 1)))
        + 0.01 * rng.standard_normal((N, T)),  # a pure sinusoid
        "scale-free": pink_noise(rng, N, T),  # 1/f
        "scale-free(walk)": np.cumsum(rng.standard_normal((N, T)), axis=1),  # 1/f², a random walk
        "smooth": gaussian_filter1d(rng.standard_normal((N, T)), 4, axis=1),  # low-pass, no power law
        "dead": np.full((N, T), 0.3),  # constant
    }
    return np.stack(list(signals.values()), axis=1), [k.split("(")[0] for k in signals]


def spectrum_of(x, dtype=torch.float32, **options):
    acc = ChannelSpectrum(**{"spectrum_samples": None, **options})
    for part in np.array_split(x, 4):
        view = make_view(torch.tensor(part, dtype=dtype), Layout(1, Axis.TIME))
        acc.update(view, channel_reduce(view, acc.thresholds, "torch"))
    return acc


def test_registered():
    assert LAYER_ANALYSES.get("spectrum") is analyse_spectrum
    assert "temporal" in MODEL_ANALYSES


def test_each_state_on_signals_of_that_class():
    x, expected = synthetic_channels()
    result = analyse_spectrum(spectrum_of(x), {})
    assert result["per_channel"]["state"] == expected
    assert result["state_counts"] == {s: expected.count(s) for s in STATES}


@pytest.mark.parametrize("seed", [1, 2])
def test_states_are_stable_across_draws(seed):
    x, expected = synthetic_channels(seed)
    assert analyse_spectrum(spectrum_of(x, dtype=torch.float64), {})["per_channel"]["state"] == expected


def test_saturated_clipped_tanh_through_the_probe():
    t = torch.arange(512.0)
    model = nn.Sequential(nn.Identity(), nn.Tanh())
    with torch.no_grad(), Probe(model, layers="1", stats=("spectrum",)) as probe:
        for _ in range(3):
            phase = torch.rand(8, 4, 1) * 6.3
            model(5 * torch.sin(2 * np.pi * 0.05 * t + phase) + 0.1 * torch.randn(8, 4, 512))  # (B, C, T)
    spec = probe.result().layers["1"].stats["spectrum"]
    # |5 sin| > atanh(0.96) ≈ 1.95 for 74.5 % of the time: that share sits within 2 % of ±1
    assert spec["saturation_fraction"] == pytest.approx(0.745, abs=0.03)
    assert spec["state"] == "saturated" and set(spec["per_channel"]["state"]) == {"saturated"}


def test_a_gentle_tanh_is_not_saturated():
    t = torch.arange(512.0)
    model = nn.Sequential(nn.Identity(), nn.Tanh())
    with torch.no_grad(), Probe(model, layers="1", stats=("spectrum",)) as probe:
        model(0.5 * torch.sin(2 * np.pi * 0.05 * t + torch.rand(8, 4, 1) * 6.3))
    spec = probe.result().layers["1"].stats["spectrum"]
    assert spec["saturation_fraction"] == 0.0 and spec["state"] == "oscillatory"


def test_band_powers_sum_to_the_total_and_white_noise_power_is_its_variance():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 2, 512)) * np.array([1.0, 3.0])[None, :, None]
    acc = spectrum_of(x, dtype=torch.float64, nperseg=64)
    spec = Spectra(acc.frequencies().numpy(), acc.psd().numpy(), acc.bin_weights().numpy())
    bands = band_power(spec, default_bands())
    np.testing.assert_allclose(bands.sum(axis=1), total_power(spec), rtol=1e-12)
    # Welch density integrates to the variance (Parseval), less the detrended mean's share (~1.5/L)
    np.testing.assert_allclose(total_power(spec), [1.0, 9.0], rtol=0.05)


def test_radial_band_power_is_the_variance_of_an_image_inside_the_nyquist_disc():
    h = w = 16
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = 2.0 * np.cos(2 * np.pi * (3 * yy / h)) + np.cos(2 * np.pi * (2 * yy / h + 5 * xx / w)) + 7.0
    x = torch.tensor(np.broadcast_to(img, (3, 1, h, w)).copy())
    acc = ChannelSpectrum()
    view = make_view(x, Layout(1, Axis.SPACE))
    acc.update(view, channel_reduce(view, (), "torch"))
    spec = Spectra(acc.frequencies().numpy(), acc.psd().numpy(), acc.bin_weights().numpy(), fit_first_bin=1)
    np.testing.assert_allclose(total_power(spec), [img.var()], rtol=1e-12)  # 2²/2 + 1²/2 = 2.5
    ring = np.round(np.hypot(2, 5)).astype(int)  # the (2, 5) wave's ring: r = √29 / 16 → ring 5
    assert set(np.nonzero(spec.power[0] > 1e-9)[0]) == {3, ring}


def test_peak_centroid_entropy_and_slope_on_known_spectra():
    f = np.arange(33) / 64
    flat = np.ones(33)
    line = np.full(33, 1e-6)
    line[10] = 1.0
    power_law = np.r_[1.0, f[1:] ** -1.5]
    spec = Spectra(f, np.stack([flat, line, power_law]), np.full(33, 1 / 64))
    peak_f, prom = dominant_peak(spec)
    assert peak_f[1] == f[10] and prom[1] == pytest.approx(6.0)  # 10⁶ above its flanks: 6 decades
    assert prom[2] == 0.0  # a maximum at the first bin is no peak
    np.testing.assert_allclose(spectral_centroid(spec)[:2], [f[1:].mean(), f[10]], rtol=1e-4)  # 1e-6 floor
    np.testing.assert_allclose(spectral_entropy(spec)[0], 1.0)
    assert spectral_entropy(spec)[1] < 0.01
    slope, r2 = power_law_fit(spec)
    assert slope[2] == pytest.approx(-1.5) and r2[2] == pytest.approx(1.0)
    assert slope[0] == 0.0 and np.isnan(r2[0])  # flat: no variance in log power to explain


def test_measured_slopes_of_pink_noise_and_random_walk():
    rng = np.random.default_rng(4)
    x = np.stack([pink_noise(rng, 64, 2048), np.cumsum(rng.standard_normal((64, 2048)), axis=1)], axis=1)
    result = analyse_spectrum(spectrum_of(x, dtype=torch.float64), {})
    slope, r2 = result["per_channel"]["slope"], result["per_channel"]["slope_r2"]
    assert slope[0] == pytest.approx(-1.0, abs=0.15) and r2[0] > 0.9
    assert slope[1] == pytest.approx(-2.0, abs=0.35) and r2[1] > 0.9


def test_custom_bands_rules_and_fit_range():
    x, _ = synthetic_channels(5)
    acc = spectrum_of(x, bands={"slow": (0, 0.1), "fast": (0.1, 0.5)},
                      state_rules={"broadband_entropy": 1.01}, slope_range=(0.05, 0.25))
    result = analyse_spectrum(acc, {})
    assert result["bands"] == {"names": ["slow", "fast"], "edges": [[0.0, 0.1], [0.1, 0.5]]}
    assert result["per_channel"]["state"][0] == "mixed"  # white noise is no longer flat enough
    assert result["rules"]["broadband_entropy"] == 1.01
    fractions = result["per_channel"]["band_fraction"]
    assert fractions["fast"][1] > 0.99  # the 0.12 sinusoid


def test_invalid_options_fail_with_a_message():
    with pytest.raises(ConfigError, match="low < high"):
        parse_bands({"x": (0.3, 0.1)})
    with pytest.raises(ConfigError, match="pair"):
        parse_bands({"x": 0.3})
    x, _ = synthetic_channels()
    with pytest.raises(ConfigError, match="unknown state_rules"):
        analyse_spectrum(spectrum_of(x[:, :1], state_rules={"nope": 1}), {})


def test_json_is_compact_and_serialisable():
    x, _ = synthetic_channels()
    result = analyse_spectrum(spectrum_of(x, spectrum_top_k=2), {})
    text = json.dumps(to_jsonable(result))
    assert "NaN" not in text
    assert len(result["top_channels"]["index"]) == 2 and len(result["top_channels"]["psd"][0]) == 33
    assert result["top_channels"]["index"][0] == 3  # the random walk holds the most power
    assert len(result["mean_psd"]) == len(result["frequencies"]) == 33
    assert result["samples_per_batch"] is None  # the spectra's budget is reported (spectrum_of: every sample)
    for key in ("total_power", "peak_frequency", "peak_prominence", "centroid", "entropy", "slope",
                "slope_r2", "state"):
        assert len(result["per_channel"][key]) == 6


def test_the_sample_budget_is_reported():
    x, _ = synthetic_channels()
    assert analyse_spectrum(spectrum_of(x, spectrum_samples=3), {})["samples_per_batch"] == 3


def test_layers_without_a_time_axis_and_the_model_overview():
    model = nn.Sequential(nn.Conv1d(2, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))
    with torch.no_grad(), Probe(model, stats=("spectrum",), stream_spectrum=True, stream_nperseg=4) as probe:
        for _ in range(6):
            model(torch.randn(8, 2, 64))
    res = probe.result()
    head = res.layers["3"].stats["spectrum"]
    assert head["kind"] == "none" and head["state"] is None and head["stream"]["segments"] == 2
    overview = res.model["temporal"]
    assert overview["layers"] == ["0", "1"] and overview["bands"] == list(default_bands())
    assert len(overview["band_fraction"][0]) == 5 and sum(overview["band_fraction"][0]) == pytest.approx(1.0)
    json.dumps(to_jsonable(res.to_dict()))


def test_dead_relu_layer():
    conv = nn.Conv1d(1, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(-1.0)
    model = nn.Sequential(conv, nn.ReLU())
    with torch.no_grad(), Probe(model, stats=("spectrum",)) as probe:
        model(torch.randn(4, 1, 100))
    spec = probe.result().layers["1"].stats["spectrum"]
    assert spec["state"] == "dead" and spec["dead_channels"] == 3 and spec["top_channels"]["index"] == []


def test_the_docs_example_runs():
    docs = Path(__file__).resolve().parents[2] / "docs" / "temporal.md"
    code = re.findall(r"```python\n(.*?)```", docs.read_text(encoding="utf-8"), flags=re.S)[0]
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, str(docs), "exec"), scope)
    found = [p["frequency"] for p in scope["conv1"]["peaks"][:3]]
    assert all(min(abs(p - f) for p in found) <= 1 / 64 for f in scope["FREQUENCIES"])
