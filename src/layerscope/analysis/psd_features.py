"""Features of one-sided power spectra: band powers, peaks, centroid, entropy and the 1/f slope.

Every function takes a :class:`Spectra` — rows of spectra on one frequency grid — and returns one
value per row (vectorised over rows; only the peak prominences loop, once per row, in SciPy).

Conventions (documented in docs/temporal.md):

- *power in a set of bins* is ``Σ_k S_k · weight_k`` (``weight_k = Δf`` for a Welch density, the
  ring's share of the frequency plane for a radial spectrum), so band powers add up to the total;
- *shape features* (peak, centroid, entropy, low-frequency fraction) use the bins ``k ≥ 1``: the
  DC bin only holds what the constant detrending left over;
- the *power-law fit* uses the bins from ``fit_first_bin`` (2 for Welch: under a Hann window the
  detrending also shapes bin 1) up to Nyquist, unless a frequency range is given.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks, peak_prominences

from .._errors import ConfigError

LOG_FLOOR = 1e-300  # log10 of a zero power is taken at this floor


@dataclass(frozen=True)
class Spectra:
    """``psd`` rows ``[R, F]`` at ``frequencies`` ``[F]`` with integration ``weights`` ``[F]``."""

    frequencies: np.ndarray
    psd: np.ndarray
    weights: np.ndarray
    fit_first_bin: int = 2

    @property
    def power(self) -> np.ndarray:
        """Power per bin ``S_k · weight_k``: ``[R, F]``."""
        return self.psd * self.weights


def default_bands(fs: float = 1.0) -> dict[str, tuple[float, float]]:
    """Octave bands below Nyquist, as fractions of ``fs``: [0, 1/32), [1/32, 1/16), [1/16, 1/8),
    [1/8, 1/4), [1/4, 1/2]. Each band is one doubling of frequency (as the EEG delta…gamma bands
    roughly are), so a 1/f spectrum puts equal power in each of the four upper bands."""
    edges = (0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)
    names = ("very_low", "low", "mid", "high", "very_high")
    return {n: (lo * fs, hi * fs) for n, lo, hi in zip(names, edges[:-1], edges[1:], strict=True)}


def parse_bands(bands: Mapping[str, Sequence[float]] | None,
                fs: float = 1.0) -> dict[str, tuple[float, float]]:
    """``{name: (low, high)}`` in the units of ``fs``; ``None`` gives :func:`default_bands`."""
    if bands is None:
        return default_bands(fs)
    out = {}
    for name, edge in dict(bands).items():
        try:
            lo, hi = (float(e) for e in edge)
        except (TypeError, ValueError):
            raise ConfigError(f"band {name!r} must be a (low, high) pair of frequencies, got {edge!r}") \
                from None
        if not 0 <= lo < hi:
            raise ConfigError(f"band {name!r} needs 0 ≤ low < high, got ({lo}, {hi})")
        out[str(name)] = (lo, hi)
    if not out:
        raise ConfigError("bands is empty: give at least one (low, high) band or leave it unset")
    return out


def band_masks(frequencies: np.ndarray, bands: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """``[B, F]`` bool: bin k is in band [low, high) by its centre frequency; the band whose upper
    edge is the top frequency also holds the top bin (Nyquist)."""
    top = frequencies[-1] if frequencies.size else 0.0
    return np.stack([(frequencies >= lo) & ((frequencies < hi) | ((hi >= top) & (frequencies == top)))
                     for lo, hi in bands.values()])


def band_power(spec: Spectra, bands: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """``[R, B]``: ``Σ_{k in band} S_k · weight_k``."""
    return spec.power @ band_masks(spec.frequencies, bands).T.astype(np.float64)


def total_power(spec: Spectra) -> np.ndarray:
    """``[R]``: ``Σ_k S_k · weight_k`` over every bin (Parseval: the variance the spectrum holds)."""
    return spec.power.sum(axis=1)


def _shape_power(spec: Spectra) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies ``[F−1]`` and power ``[R, F−1]`` of the bins k ≥ 1."""
    return spec.frequencies[1:], spec.power[:, 1:]


def _normalised(power: np.ndarray) -> np.ndarray:
    total = power.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, power / total, np.nan)


def spectral_centroid(spec: Spectra) -> np.ndarray:
    """``[R]``: ``Σ f_k p_k`` with ``p`` the power distribution over the bins k ≥ 1."""
    freqs, power = _shape_power(spec)
    return _normalised(power) @ freqs


def spectral_entropy(spec: Spectra) -> np.ndarray:
    """``[R]``: Shannon entropy of ``p`` (bins k ≥ 1) over its maximum ``log(F−1)``: 1 for a flat
    spectrum, near 0 for a single line (Inouye et al. 1991, "Quantification of EEG irregularity by
    use of the entropy of the power spectrum")."""
    _, power = _shape_power(spec)
    p = _normalised(power)
    if p.shape[1] < 2:
        return np.full(p.shape[0], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return np.where(np.isnan(p).any(axis=1), np.nan, h / np.log(p.shape[1]))


def low_frequency_fraction(spec: Spectra, cutoff: float) -> np.ndarray:
    """``[R]``: share of the power (bins k ≥ 1) at frequencies below ``cutoff``."""
    freqs, power = _shape_power(spec)
    return _normalised(power) @ (freqs < cutoff).astype(np.float64)


def _log_psd(psd: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(psd, LOG_FLOOR))


def power_law_fit(spec: Spectra,
                  frequency_range: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through ``(log10 f, log10 S)``: slope ``[R]`` (−β of ``S ∝ 1/f^β``) and R².

    The bins are those from ``spec.fit_first_bin`` to Nyquist, or those with ``lo ≤ f ≤ hi`` for
    ``frequency_range = (lo, hi)`` (DC always excluded). Fewer than 3 bins, or a spectrum without
    variance in log power, give NaN.
    """
    keep = np.arange(spec.frequencies.size) >= max(spec.fit_first_bin, 1)
    if frequency_range is not None:
        lo, hi = frequency_range
        keep = (spec.frequencies >= lo) & (spec.frequencies <= hi) & (spec.frequencies > 0)
    rows = spec.psd.shape[0]
    if keep.sum() < 3:
        return np.full(rows, np.nan), np.full(rows, np.nan)
    x = np.log10(spec.frequencies[keep])  # (K,)
    y = _log_psd(spec.psd[:, keep])  # (R, K)
    xc, yc = x - x.mean(), y - y.mean(axis=1, keepdims=True)
    slope = yc @ xc / (xc @ xc)
    ss_tot = (yc * yc).sum(axis=1)
    ss_res = ((yc - slope[:, None] * xc) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)
    return slope, r2


def dominant_peak(spec: Spectra) -> tuple[np.ndarray, np.ndarray]:
    """Frequency ``[R]`` of the highest bin with k ≥ 1 and its prominence ``[R]`` in decades:
    ``scipy.signal.peak_prominences`` on ``log10 S`` (bins k ≥ 1), i.e. how far the peak stands above
    the higher of the lowest points that separate it from higher ground on either side. A maximum at
    the first or last bin has prominence 0 (nothing on one side): a low-pass spectrum is no peak."""
    rows, n = spec.psd.shape
    freq, prom = np.full(rows, np.nan), np.full(rows, np.nan)
    if n < 2:
        return freq, prom
    logs = _log_psd(spec.psd[:, 1:])  # (R, F−1)
    with warnings.catch_warnings():  # a maximum on a plateau has prominence 0, which is the answer
        warnings.filterwarnings("ignore", message="some peaks have a prominence of 0")
        for r in range(rows):  # once per channel, at analysis time (not per batch)
            if not np.isfinite(spec.psd[r, 1:]).all():
                continue
            k = int(np.argmax(logs[r]))
            freq[r] = spec.frequencies[k + 1]
            prom[r] = peak_prominences(logs[r], [k])[0][0] if 0 < k < n - 2 else 0.0
    return freq, prom


def prominent_peaks(spec: Spectra, row: int = 0, top: int = 5,
                    min_prominence: float = 0.3) -> list[dict[str, float]]:
    """The ``top`` local maxima (bins k ≥ 1) of one row by prominence in decades of ``log10 S``
    (``scipy.signal.find_peaks``), at least ``min_prominence``: ``[{"frequency", "prominence"}]``."""
    if spec.psd.shape[1] < 3 or not np.isfinite(spec.psd[row, 1:]).all():
        return []
    logs = _log_psd(spec.psd[row, 1:])
    idx, props = find_peaks(logs, prominence=min_prominence)
    order = np.argsort(props["prominences"])[::-1][:top]
    return [{"frequency": float(spec.frequencies[idx[i] + 1]), "prominence": float(props["prominences"][i])}
            for i in order]
