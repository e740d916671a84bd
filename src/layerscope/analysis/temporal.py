"""Temporal (and spatial-frequency) analysis of the ``spectrum`` accumulator: spectral features and
the operational state of every channel and layer.

Operational states — the first rule that holds wins (thresholds: :class:`StateRules`, overridable
with the probe option ``state_rules={...}``; documented in docs/temporal.md):

1. ``dead``         the channel never varied: max == min over all values seen (a layer: every channel).
2. ``saturated``    a bounded activation (tanh, sigmoid, hardtanh …) puts more than
                    ``saturation_fraction`` of its values within 2 % of its range limits.
3. ``oscillatory``  the highest spectral peak (k ≥ 1) stands ≥ ``oscillatory_prominence`` decades
                    above its surroundings (``scipy.signal.peak_prominences`` on log10 S).
4. ``scale-free``   a power law fits: R² ≥ ``scale_free_r2`` with slope in ``scale_free_slope``
                    (S ∝ 1/f^β, 0.5 ≤ β ≤ 3: pink to beyond Brownian).
5. ``smooth``       at least ``smooth_fraction`` of the power lies below ``smooth_cutoff`` × fs.
6. ``broadband``    flat: normalised spectral entropy ≥ ``broadband_entropy``.
7. ``mixed``        none of the above.

A layer's state applies the same rules to the layer-mean spectrum (the mean over channels of the
per-channel spectra), the layer's pooled saturation fraction, and ``dead`` when all channels are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .._errors import ConfigError
from . import LAYER_ANALYSES, MODEL_ANALYSES
from .psd_features import (
    Spectra,
    band_power,
    dominant_peak,
    low_frequency_fraction,
    parse_bands,
    power_law_fit,
    prominent_peaks,
    spectral_centroid,
    spectral_entropy,
    total_power,
)

STATES = ("dead", "saturated", "oscillatory", "scale-free", "smooth", "broadband", "mixed")


@dataclass(frozen=True)
class StateRules:
    """Thresholds of the operational-state rules (frequencies as fractions of ``fs``)."""

    saturation_fraction: float = 0.5  # as analysis.health's SATURATION_WARN
    oscillatory_prominence: float = 1.0  # decades (peak ≥ 10× its flanking minima)
    scale_free_r2: float = 0.9
    scale_free_slope: tuple[float, float] = (-3.0, -0.5)
    smooth_cutoff: float = 1 / 16
    smooth_fraction: float = 0.75
    broadband_entropy: float = 0.9

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> StateRules:
        known = {f.name for f in fields(cls)}
        unknown = set(options or {}) - known
        if unknown:
            raise ConfigError(f"unknown state_rules {sorted(unknown)}; known: {sorted(known)}")
        opts = dict(options or {})
        if "scale_free_slope" in opts:
            opts["scale_free_slope"] = tuple(float(s) for s in opts["scale_free_slope"])
        return cls(**opts)


def spectral_features(spec: Spectra, bands: dict[str, tuple[float, float]], fs: float, rules: StateRules,
                      slope_range: Any = None) -> dict[str, np.ndarray]:
    """Every feature of every row of ``spec`` (``[R]`` arrays; ``band_power`` is ``[R, B]``)."""
    bp = band_power(spec, bands)
    total = total_power(spec)
    peak_f, peak_p = dominant_peak(spec)
    slope, r2 = power_law_fit(spec, slope_range)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(total[:, None] > 0, bp / total[:, None], np.nan)
    return {
        "total_power": total, "band_power": bp, "band_fraction": fraction,
        "peak_frequency": peak_f, "peak_prominence": peak_p,
        "centroid": spectral_centroid(spec), "entropy": spectral_entropy(spec),
        "slope": slope, "slope_r2": r2,
        "low_fraction": low_frequency_fraction(spec, rules.smooth_cutoff * fs),
    }


def classify(features: dict[str, np.ndarray], dead: np.ndarray, saturation: np.ndarray | None,
             rules: StateRules) -> np.ndarray:
    """``[R]`` state names: the first rule of the module docstring that holds (NaN never holds)."""
    lo, hi = rules.scale_free_slope
    sat = saturation if saturation is not None else np.zeros_like(dead, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        conditions = [
            dead,
            sat > rules.saturation_fraction,
            features["peak_prominence"] >= rules.oscillatory_prominence,
            (features["slope_r2"] >= rules.scale_free_r2) & (lo <= features["slope"])
            & (features["slope"] <= hi),
            features["low_fraction"] >= rules.smooth_fraction,
            features["entropy"] >= rules.broadband_entropy,
        ]
    return np.select(conditions, list(STATES[:-1]), default=STATES[-1])


def saturation_fractions(acc: Any, meta: dict[str, Any]) -> tuple[np.ndarray, float] | None:
    """Per-channel ``[C]`` and pooled share of values within 2 % of a bounded layer's range limits.

    The probe appends the two saturation thresholds (low + 2 % of the range, high − 2 %) to the user
    thresholds; ``meta`` says how many user thresholds there are. None for unbounded layers.
    """
    n_user = len(meta.get("thresholds", ()))
    if not meta.get("saturation_thresholds") or acc.above is None or acc.above.shape[0] < n_user + 2:
        return None
    count = acc.count.cpu().double().numpy()
    above = acc.above.cpu().double().numpy()
    low, high = count - above[n_user], above[n_user + 1]  # values ≤ low threshold, > high threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        per_channel = np.where(count > 0, (low + high) / count, np.nan)
    pooled = float((low + high).sum() / count.sum()) if count.sum() > 0 else math.nan
    return per_channel, pooled


def _layer_row(features: dict[str, np.ndarray], r: int, band_names: list[str]) -> dict[str, Any]:
    return {
        "total_power": float(features["total_power"][r]),
        "band_power": dict(zip(band_names, features["band_power"][r].tolist(), strict=True)),
        "band_fraction": dict(zip(band_names, features["band_fraction"][r].tolist(), strict=True)),
        **{k: float(features[k][r]) for k in ("peak_frequency", "peak_prominence", "centroid", "entropy",
                                               "slope", "slope_r2", "low_fraction")},
    }


def _per_channel(features: dict[str, np.ndarray], states: np.ndarray,
                 band_names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: features[k].tolist() for k in (
        "total_power", "peak_frequency", "peak_prominence", "centroid", "entropy", "slope", "slope_r2")}
    out["band_fraction"] = {b: features["band_fraction"][:, i].tolist() for i, b in enumerate(band_names)}
    out["state"] = states.tolist()
    return out


def _analyse_spectra(spec: Spectra, dead: np.ndarray, sat: tuple[np.ndarray, float] | None,
                     settings: dict[str, Any]) -> dict[str, Any]:
    """Features and states for channels (rows 1…C of ``spec``) and the layer mean (row 0)."""
    bands, rules, band_names = settings["bands"], settings["rules"], list(settings["bands"])
    feats = spectral_features(spec, bands, settings["fs"], rules, settings["slope_range"])
    per_sat = sat[0] if sat else None
    states = classify(feats, np.concatenate([[bool(dead.all())], dead]),
                      np.concatenate([[sat[1]], per_sat]) if sat else None, rules)
    out = {**_layer_row(feats, 0, band_names), "state": str(states[0])}
    out["state_counts"] = {s: int((states[1:] == s).sum()) for s in STATES}
    out["peaks"] = prominent_peaks(spec, 0)
    channel_feats = {k: v[1:] for k, v in feats.items()}
    out["per_channel"] = _per_channel(channel_feats, states[1:], band_names)
    out["top_channels"] = _top_channels(spec, channel_feats["total_power"], dead, settings["top_k"])
    return out


def _top_channels(spec: Spectra, total: np.ndarray, dead: np.ndarray, k: int) -> dict[str, Any]:
    """Per-channel spectra of the ``k`` most energetic live channels only (keeps the JSON compact)."""
    energy = np.where(dead | ~np.isfinite(total), -np.inf, total)
    idx = [int(i) for i in np.argsort(-energy, kind="stable")[:k] if np.isfinite(energy[i])]
    return {"index": idx, "psd": spec.psd[[i + 1 for i in idx]].tolist()}


def _with_mean_row(frequencies: np.ndarray, psd: np.ndarray, weights: np.ndarray, first: int) -> Spectra:
    """Row 0: the mean over channels that have a spectrum; rows 1…C: the channels."""
    has = np.isfinite(psd).all(axis=1)
    mean = psd[has].mean(axis=0) if has.any() else np.full(psd.shape[1], np.nan)
    return Spectra(frequencies, np.vstack([mean[None], psd]), weights, first)


def _settings(acc: Any) -> dict[str, Any]:
    return {"bands": parse_bands(acc.bands, acc.fs), "rules": StateRules.from_options(acc.state_rules),
            "fs": acc.fs, "slope_range": acc.slope_range, "top_k": acc.top_k}


@LAYER_ANALYSES.register("spectrum")
def analyse_spectrum(acc: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready spectra, features and operational states of one layer (keys: docs/temporal.md)."""
    if acc.power is None:
        return {"kind": "none", "channels": 0}
    settings = _settings(acc)
    dead = (acc.max.cpu() == acc.min.cpu()).numpy() & (acc.count.cpu() > 0).numpy()
    sat = saturation_fractions(acc, meta)
    out: dict[str, Any] = {
        "kind": acc.kind, "fs": acc.fs, "channels": int(acc.count.numel()),
        "nperseg": acc.length or None, "spatial_shape": list(acc.spatial_shape),
        "segments": int(acc.segments.max()) if acc.segments.numel() else 0, "skipped_samples": acc.skipped,
        "samples_per_batch": acc.max_samples,  # the spectra's budget (None: every sample), as spatial's
        "bands": {"names": list(settings["bands"]), "edges": [list(e) for e in settings["bands"].values()]},
        "rules": asdict(settings["rules"]),
        "saturation_fraction": sat[1] if sat else None,
        "dead_channels": int(dead.sum()),
    }
    if acc.kind != "none" and int(acc.segments.max()) > 0:
        spec = _with_mean_row(acc.frequencies().numpy(), acc.psd().numpy(), acc.bin_weights().numpy(),
                              2 if acc.kind == "welch" else 1)
        out.update(frequencies=spec.frequencies.tolist(), mean_psd=spec.psd[0].tolist())
        out.update(_analyse_spectra(spec, dead, sat, settings))
    else:
        out.update(_state_without_spectrum(dead, sat, settings["rules"]))
    if acc.stream:
        out["stream"] = _stream(acc, dead, settings)
    return out


def _state_without_spectrum(dead: np.ndarray, sat: tuple[np.ndarray, float] | None,
                            rules: StateRules) -> dict[str, Any]:
    """Only ``dead`` and ``saturated`` can be decided without a spectrum; otherwise the state is None."""
    def one(is_dead: bool, s: float | None) -> str | None:
        if is_dead:
            return "dead"
        return "saturated" if s is not None and s > rules.saturation_fraction else None

    per = [one(bool(d), float(sat[0][i]) if sat else None) for i, d in enumerate(dead)]
    return {"state": one(bool(dead.all()) and dead.size > 0, sat[1] if sat else None),
            "per_channel": {"state": per}}


def _stream(acc: Any, dead: np.ndarray, settings: dict[str, Any]) -> dict[str, Any]:
    """The spectrum of the per-batch channel means over consecutive batches (option stream_spectrum)."""
    length = acc.stream_nperseg
    out: dict[str, Any] = {"nperseg": length, "steps": acc.stream_steps, "segments": acc.stream_segments}
    if acc.stream_segments == 0:
        return out
    freqs = np.arange(length // 2 + 1) * acc.fs / length
    spec = _with_mean_row(freqs, acc.stream_psd().numpy(), np.full(freqs.size, acc.fs / length), 2)
    out.update(frequencies=freqs.tolist(), mean_psd=spec.psd[0].tolist())
    out.update(_analyse_spectra(spec, dead, None, settings))
    return out


@MODEL_ANALYSES.register("temporal")
def temporal_overview(layers: dict[str, Any]) -> dict[str, Any]:
    """Layers × bands power fractions, each layer's state and dominant frequency, in forward order."""
    ordered = sorted(layers.values(), key=lambda r: r.meta.get("order", 0))
    rows = [r for r in ordered if (r.stats.get("spectrum") or {}).get("band_fraction") is not None]
    if not rows:
        return {"layers": [], "bands": [], "band_fraction": [], "kind": [], "state": [], "peak_frequency": []}
    spectra = [r.stats["spectrum"] for r in rows]
    bands = spectra[0]["bands"]["names"]
    counts = {s: sum(sp["state_counts"].get(s, 0) for sp in spectra) for s in STATES}
    return {
        "layers": [r.meta["name"] for r in rows],
        "kind": [sp["kind"] for sp in spectra],
        "bands": bands,
        "band_fraction": [[sp["band_fraction"].get(b) for b in bands] for sp in spectra],
        "state": [sp["state"] for sp in spectra],
        "peak_frequency": [sp["peak_frequency"] for sp in spectra],
        "channel_state_counts": counts,
    }
