"""Spatial-modality sections: density grids and ζ impact distributions.

Reads ``stats["spatial"]`` (``layer_grid``, ``grid_shape``, ``top_channels``, ``spatial_entropy``,
``concentration``) and ``stats["impact"]`` (``per_channel.zeta``, ``per_channel.impact``,
``low_impact_channels``, ``method``) of each layer — see ``analysis/spatial.py``. Correlation and
connectivity live in :mod:`.connectivity`.
"""

from __future__ import annotations

import math
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
    matrix,
    missing,
    note,
    num,
    ordered_layers,
    table,
)

MAX_GRID_LAYERS = 24
MAX_CHANNEL_GRIDS = 4
MAX_ZETA_LAYERS = 24
TOP_IMPACT = 15
ZETA_BINS = 24


def _grid(value: Any) -> list[list[float | None]]:
    """A density grid as rows: 2-D lists stay, a 1-D list (sequence positions) becomes one row."""
    if isinstance(value, Sequence) and value and not isinstance(value[0], Sequence):
        row = floats(value)
        return [row] if row else []
    return matrix(value)


def _channel_grids(s: Mapping[str, Any]) -> list[tuple[str, list[list[float | None]]]]:
    raw = s.get("top_channels")
    out = []
    for item in raw if isinstance(raw, Sequence) else []:
        if isinstance(item, Mapping) and (g := _grid(item.get("grid"))):
            out.append((f"channel {item.get('channel', '?')}", g))
    return out


def _small_grid(values: list[list[float | None]], name: str) -> str:
    cell = max(4.0, min(12.0, 96 / max(len(values[0]), 1)))
    return svg.heatmap(values, [], [], cell=cell, label=f"spatial density of {name}", colorbar=False)


def _card(name: str, s: Mapping[str, Any], grid: list[list[float | None]]) -> str:
    figs = [figure(_small_grid(grid, name), "whole layer")]
    figs += [figure(_small_grid(g, f"{name} {ch}"), ch) for ch, g in _channel_grids(s)[:MAX_CHANNEL_GRIDS]]
    shape = "×".join(str(v) for v in s.get("grid_shape") or [])
    facts = (f'<div class="card-facts">grid {esc(shape)} · entropy {num(s.get("spatial_entropy"))} · '
             f'peak/mean {num(s.get("concentration"))}</div>')
    return f'<div class="card"><h4>{esc(name)}</h4>{facts}<div class="row">{"".join(figs)}</div></div>'


def density_grids(data: Mapping[str, Any]) -> Section:
    found = [(n, s, g) for n, l in ordered_layers(data)
             if (s := layer_stat(l, "spatial")) and (g := _grid(s.get("layer_grid")))]
    if not found:
        return Section("spatial", "Spatial density", missing("Spatial density grids (stat 'spatial')"))
    intro = note("Mean activation energy (x²) per cell of a coarse grid over the layer's positions (image: "
                 "rows × columns; sequence: position bins), summed over channels, then for the most active "
                 "channels. Each grid is coloured over its own range (dark low, bright high); hover for "
                 "values. Entropy 1 = energy spread evenly, 0 = all in one cell.")
    cards = "".join(_card(n, s, g) for n, s, g in found[:MAX_GRID_LAYERS])
    return Section("spatial", "Spatial density", intro
                   + capped(MAX_GRID_LAYERS, len(found), "layers", "the first in forward order")
                   + f'<div class="cards">{cards}</div>')


# -- ζ impact ------------------------------------------------------------------------------------
def _zeta(s: Mapping[str, Any]) -> list[float]:
    per_channel = s.get("per_channel") or {}
    return [v for v in floats(per_channel.get("zeta") if isinstance(per_channel, Mapping) else None)
            if v is not None]


def _bins(values: list[float], n: int) -> tuple[list[int], list[float]]:
    """Equal-width bins over [min, max], for display only (the values themselves are in report.json)."""
    lo, hi = min(values), max(values)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / n
    counts = [0] * n
    for v in values:
        counts[min(int((v - lo) / width), n - 1)] += 1
    return counts, [lo + i * width for i in range(n + 1)]


def _top_channels(found: list[tuple[str, dict[str, Any], list[float]]]) -> str:
    ranked = []
    for name, s, _ in found:
        per = s.get("per_channel") or {}
        zeta, raw = floats(per.get("zeta")), floats(per.get("impact"))
        ranked += [(z, name, i, raw[i] if i < len(raw) else None)
                   for i, z in enumerate(zeta) if z is not None]
    by_impact = all(v is not None for *_, v in ranked)  # |a·∂L/∂a| is in loss units: comparable across layers
    top = sorted(ranked, key=lambda r: -(r[3] if by_impact else r[0]))[:TOP_IMPACT]
    key = "impact" if by_impact else "ζ"
    return (f"<h3>Most impactful channels (top {len(top)} by {key})</h3>"
            + table(["layer", "channel", "ζ", "impact |a·∂L/∂a|"],
                    [[esc(n), str(i), num(z), num(v)] for z, n, i, v in top], cls="data compact"))


def _low_impact(found: list[tuple[str, dict[str, Any], list[float]]]) -> str:
    rows = []
    for name, s, z in found:
        low = s.get("low_impact_channels")
        if isinstance(low, list) and low:
            shown = ", ".join(str(c) for c in low[:20]) + (" …" if len(low) > 20 else "")
            rows.append([esc(name), f"{len(low)} of {len(z)}", esc(shown)])
    if not rows:
        return ""
    thresholds = [s.get("zeta_low_threshold") for _, s, _ in found]
    threshold = next((t for t in thresholds if is_num(t)), -1)
    return (f"<h3>Low-impact channels (ζ &lt; {num(threshold)})</h3>"
            + table(["layer", "channels", "indices"], rows, cls="data compact"))


def impact(data: Mapping[str, Any]) -> Section:
    with_stat = [(n, s) for n, l in ordered_layers(data) if (s := layer_stat(l, "impact"))]
    found = [(n, s, z) for n, s in with_stat if (z := _zeta(s))]
    if not found:
        reason = next((s["note"] for _, s in with_stat if isinstance(s.get("note"), str)), None)
        return Section("impact", "ζ impact scores", missing("ζ impact scores (stat 'impact')")
                       + (note(reason) if reason else ""))
    method = next((s["method"] for _, s, _ in found if isinstance(s.get("method"), str)), "")
    body = [note("ζ: each channel's impact on the loss (first-order Taylor, |a·∂L/∂a| averaged over the "
                 "data), z-scored within its layer." + (f" Method: {method}." if method else "")),
            capped(MAX_ZETA_LAYERS, len(found), "layers", "the first in forward order")]
    figs = []
    for name, _, z in found[:MAX_ZETA_LAYERS]:
        counts, edges = _bins(z, min(ZETA_BINS, max(4, int(math.sqrt(len(z))) + 1)))
        figs.append(figure(svg.histogram(counts, edges, x_label="ζ", fill="#f28e2b", label=f"ζ of {name}"),
                           f"{name} ({len(z)} channels)"))
    body += [f'<div class="grid">{"".join(figs)}</div>', _top_channels(found), _low_impact(found)]
    return Section("impact", "ζ impact scores", "".join(body))
