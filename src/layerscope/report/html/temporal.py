"""Temporal-modality sections: spectra, spectral features, band-power heatmap, operational states.

Reads ``stats["spectrum"]`` of each layer (keys: ``analysis/temporal.py``, docs/temporal.md):
``kind`` (welch · radial · none), ``fs``, ``frequencies``, ``mean_psd``, ``band_fraction``,
``peak_frequency``, ``peak_prominence``, ``peaks``, ``centroid``, ``entropy``, ``slope``, ``slope_r2``,
``state``, ``state_counts``, ``per_channel.state`` and an optional ``stream`` block of the same keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import svg
from ._fmt import (
    Section,
    capped,
    esc,
    figure,
    floats,
    is_num,
    layer_stat,
    missing,
    note,
    num,
    ordered_layers,
    stacked_bar,
    table,
)

LINES_PER_PLOT = 8
MAX_SPECTRA = 24
MAX_BAND_ROWS = 120
STATE_COLORS = {"dead": "#9aa0a6", "saturated": "#e15759", "oscillatory": "#f28e2b", "scale-free": "#b07aa1",
                "smooth": "#4e79a7", "broadband": "#76b7b2", "mixed": "#c9b47c"}

Curve = tuple[str, list[float], list[float | None]]


def _spectra(data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(n, s) for n, l in ordered_layers(data) if (s := layer_stat(l, "spectrum"))]


def _curve(s: Mapping[str, Any]) -> tuple[list[float], list[float | None]]:
    """(frequencies, layer-mean spectrum) from bin 1 on (bin 0, DC, only holds what the detrending
    left), when both are 1-D lists of the same length; ([], []) otherwise."""
    f, p = floats(s.get("frequencies")), floats(s.get("mean_psd"))
    if len(f) < 2 or len(f) != len(p) or None in f:
        return [], []
    return [float(v) for v in f[1:]], p[1:]


def _axis_name(s: Mapping[str, Any], stream: bool = False) -> str:
    fs = s.get("fs")
    unit = "" if fs in (None, 1, 1.0) else f", fs = {num(fs)}"
    if stream:
        return f"frequency over batches (cycles/batch{unit})"
    if s.get("kind") == "radial":
        return f"spatial frequency (cycles/pixel{unit})"
    return f"frequency (cycles/sample{unit})"


def spectra(data: Mapping[str, Any]) -> Section:
    found = _spectra(data)
    if not found:
        return Section("spectra", "Spectra and band power", missing("Spectra (stat 'spectrum')"))
    body = [_spectrum_plots(found), _features(found), _band_heatmap(found)]
    return Section("spectra", "Spectra and band power", "".join(body))


def _curves(found: list[tuple[str, dict[str, Any]]]) -> dict[str, list[Curve]]:
    """Layer spectra grouped by frequency axis (time, image, batch stream): one group, one x axis."""
    groups: dict[str, list[Curve]] = {}
    for name, s in found:
        for label, block, stream in ((name, s, False), (f"{name} (stream)", s.get("stream") or {}, True)):
            f, p = _curve(block)
            if f:
                groups.setdefault(_axis_name(s, stream), []).append((label, f, p))
    return groups


def _spectrum_plots(found: list[tuple[str, dict[str, Any]]]) -> str:
    groups = _curves(found)
    total = sum(len(g) for g in groups.values())
    if not total:
        return missing("Layer power spectra")
    figs, budget = [], MAX_SPECTRA
    for axis, members in groups.items():
        members, budget = members[:budget], budget - len(members[:budget])
        for k in range(0, len(members), LINES_PER_PLOT):
            chunk = members[k:k + LINES_PER_PLOT]
            plot = svg.line_plot(chunk, x_label=axis, y_label="power (log scale)", log_y=True,
                                 label="layer power spectra")
            names = chunk[0][0] if len(chunk) == 1 else f"{chunk[0][0]} … {chunk[-1][0]}"
            caption = f"Mean power spectral density over channels: {names}"
            figs.append(figure(plot, caption))
    return ("<h3>Layer spectra</h3>" + capped(MAX_SPECTRA, total, "spectra", "the first in forward order")
            + f'<div class="grid wide">{"".join(figs)}</div>')


def _peaks(s: Mapping[str, Any]) -> str:
    peaks = s.get("peaks")
    if not isinstance(peaks, Sequence) or not peaks:
        return "—"
    items = [p for p in peaks if isinstance(p, Mapping)][:3]
    return ", ".join(f"{num(p.get('frequency'))} <span class=\"muted\">({num(p.get('prominence'), 2)})</span>"
                     for p in items) or "—"


def _features(found: list[tuple[str, dict[str, Any]]]) -> str:
    rows = []
    for name, s in found:
        r2 = s.get("slope_r2")
        slope = num(s.get("slope")) + (f' <span class="muted">(R² {num(r2, 2)})</span>' if is_num(r2) else "")
        rows.append([esc(name), esc(s.get("kind", "—")), num(s.get("peak_frequency")),
                     num(s.get("peak_prominence")), _peaks(s), num(s.get("centroid")), num(s.get("entropy")),
                     slope, state_badge(s.get("state"))])
    head = ["layer", "kind", "peak freq.", "prominence (dec.)", "peaks (prominence)", "centroid", "entropy",
            "1/f slope", "state"]
    return "<h3>Spectral features per layer</h3>" + table(head, rows)


def _bands(s: Mapping[str, Any]) -> dict[str, float | None]:
    """Band name → fraction of the layer's spectral power in that band."""
    raw = s.get("band_fraction")
    if not isinstance(raw, Mapping):
        return {}
    return {str(name): float(v) if is_num(v) else None for name, v in raw.items()}


def _band_labels(found: list[tuple[str, dict[str, Any]]], bands: list[str]) -> str:
    spec = next((b for _, s in found if isinstance(b := s.get("bands"), Mapping) and b.get("edges")), None)
    if not spec:
        return ""
    named = zip(spec.get("names") or [], spec["edges"], strict=False)  # malformed lists: the shorter wins
    pairs = [f"{n} [{num(e[0])}, {num(e[1])})" for n, e in named
             if isinstance(e, Sequence) and len(e) == 2 and n in bands]
    return note("Bands (frequency range): " + "; ".join(pairs) + ".") if pairs else ""


def _band_heatmap(found: list[tuple[str, dict[str, Any]]]) -> str:
    rows = [(n, b) for n, s in found if (b := _bands(s))]
    if not rows:
        return missing("Band powers")
    bands = list(dict.fromkeys(k for _, b in rows for k in b))
    shown = rows[:MAX_BAND_ROWS]
    values = [[b.get(k) for k in bands] for _, b in shown]
    top = max((v for row in values for v in row if v is not None), default=1.0)
    plot = svg.heatmap(values, [n for n, _ in shown], bands, vmin=0.0, vmax=top or 1.0, cell=22,
                       label="band power fraction per layer")
    return ("<h3>Band power (layers × bands)</h3>"
            + note("Fraction of each layer's spectral power that falls in each band (rows add up to 1).")
            + _band_labels(found, bands)
            + capped(MAX_BAND_ROWS, len(rows), "layers", "the first in forward order") + figure(plot))


# -- operational states --------------------------------------------------------------------------
def state_badge(state: Any) -> str:
    if not state:
        return "—"
    c = STATE_COLORS.get(str(state), "#bab0ac")
    return f'<span class="state" style="--c:{c}">{esc(state)}</span>'


def _state_counts(s: Mapping[str, Any]) -> dict[str, int]:
    """Channels per state: ``state_counts``, or counted from ``per_channel.state`` (None skipped)."""
    raw = s.get("state_counts")
    if isinstance(raw, Mapping):
        return {str(k): int(v) for k, v in raw.items() if is_num(v) and v > 0}
    counts: dict[str, int] = {}
    per_channel = (s.get("per_channel") or {}).get("state")
    for st in per_channel if isinstance(per_channel, list) else []:
        if st:
            counts[str(st)] = counts.get(str(st), 0) + 1
    return counts


def _color(state: str, k: int) -> str:
    return STATE_COLORS.get(state, svg.CATEGORICAL[k % len(svg.CATEGORICAL)])


def states(data: Mapping[str, Any]) -> Section:
    found = [(n, s.get("state"), _state_counts(s)) for n, s in _spectra(data)]
    found = [f for f in found if f[1] or f[2]]
    if not found:
        return Section("states", "Operational states", missing("Operational states"))
    seen = {st for _, state, counts in found for st in (state, *counts) if st}
    names = [n for n in STATE_COLORS if n in seen] + sorted(seen - set(STATE_COLORS))
    legend = "".join(f'<span class="legend-item"><i style="background:{_color(n, k)}"></i>{esc(n)}</span>'
                     for k, n in enumerate(names))
    rows = []
    for name, state, counts in found:
        parts = [(st, counts[st], _color(st, names.index(st))) for st in names if counts.get(st)]
        bar = stacked_bar(parts, label=f"channel states of {name}") if parts else "—"
        detail = ", ".join(f"{esc(st)} {n}" for st, n, _ in parts)
        rows.append([esc(name), state_badge(state), bar, f'<span class="muted">{detail}</span>'])
    intro = note("Each channel (and the layer's mean spectrum) gets the first state whose rule holds: dead, "
                 "saturated, oscillatory, scale-free, smooth, broadband, else mixed (docs/temporal.md).")
    return Section("states", "Operational states", intro + f'<div class="legend">{legend}</div>'
                   + table(["layer", "layer state", "channel states", "channels per state"], rows))
