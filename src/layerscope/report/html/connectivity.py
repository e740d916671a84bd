"""Channel correlation (heatmaps, effective rank, redundant pairs) and weight connectivity sections.

Reads ``stats["covariance"]`` (``correlation`` with ``correlation_channels``, ``effective_rank``,
``effective_rank_fraction``, ``redundant_pairs`` …), ``stats["connectivity"]`` (``shape``,
``strongest`` …) and ``model["connectivity"]`` (``pairs`` of consecutive layers with their strongest
``paths``, ``unchained``) — see ``analysis/spatial.py``. Heatmaps are drawn for at most
``MAX_HEATMAPS`` layers and ``MAX_CHANNELS`` channels each, so a wide model keeps a small page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import svg
from ._fmt import (
    Section,
    as_map,
    capped,
    esc,
    figure,
    is_num,
    layer_stat,
    matrix,
    missing,
    note,
    num,
    ordered_layers,
    ratio_bar,
    table,
)

MAX_CHANNELS = 64
MAX_HEATMAPS = 8
MAX_PATHS = 5


def _records(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, Sequence) else []


def _rank_row(name: str, s: Mapping[str, Any]) -> list[str]:
    frac = s.get("effective_rank_fraction")
    pairs = _records(s.get("redundant_pairs"))
    shown = ", ".join(f"{esc(p.get('a'))}–{esc(p.get('b'))} ({num(p.get('r'), 2)})" for p in pairs[:3])
    more = " …" if len(pairs) > 3 else ""
    tracked = s.get("tracked")
    channels = num(s.get("channels")) + (f' <span class="muted">({num(tracked)} tracked)</span>'
                                         if s.get("capped") else "")
    return [esc(name), channels, num(s.get("constant_channels")), num(s.get("effective_rank")),
            ratio_bar(frac, fill="#4e79a7") + f" {num(frac, 2)}", num(s.get("mean_abs_correlation"), 2),
            num(s.get("redundant_pair_count", len(pairs))), f'<span class="muted">{shown}{more}</span>']


def _heatmap(name: str, s: Mapping[str, Any], m: list[list[float | None]]) -> str:
    k = min(len(m), MAX_CHANNELS)
    labels = [str(c) for c in (s.get("correlation_channels") or [])][:k]
    labels = labels if len(labels) == k else [str(i) for i in range(k)]
    sub = [row[:k] for row in m[:k]]
    total = s.get("channels") if is_num(s.get("channels")) else len(m)
    constant = s.get("constant_channels") if is_num(s.get("constant_channels")) else 0
    live = f"{'non-constant ' if constant else ''}channels"  # constant channels have no correlation
    if len(m) > k:
        which = f"the first {k} of {len(m)} channels in the matrix ({num(total)} in the layer)"
    elif k >= total - constant:
        which = f"all {k} {live}"
    else:
        which = f"{k} of {num(total - constant)} {live} (the highest-variance ones)"
    plot = svg.heatmap(sub, labels, labels, vmin=-1.0, vmax=1.0, palette="diverging",
                       cell=max(4.0, min(22.0, 260 / k)), rotate_cols=False, label=f"correlation of {name}",
                       digits=2)
    return figure(plot, f"{name}: {which}")


def correlation(data: Mapping[str, Any]) -> Section:
    found = [(n, s) for n, l in ordered_layers(data) if (s := layer_stat(l, "covariance"))]
    found = [(n, s) for n, s in found if "effective_rank" in s or "correlation" in s]
    if not found:
        return Section("correlation", "Correlation and effective rank",
                       missing("Channel correlation (stat 'covariance')"))
    body = [note("Effective rank: the participation ratio (Σλ)²/Σλ² of the eigenvalues of the correlation "
                 "matrix of the non-constant channels, from 1 (all move together) to their number; "
                 "redundant pairs have |r| > 0.95."),
            table(["layer", "channels", "constant", "effective rank", "rank / channels", "mean |r|",
                   "redundant pairs", "strongest"], [_rank_row(n, s) for n, s in found])]
    with_matrix = [(n, s, m) for n, s in found if (m := matrix(s.get("correlation")))]
    if with_matrix:
        figs = "".join(_heatmap(n, s, m) for n, s, m in with_matrix[:MAX_HEATMAPS])
        body += ["<h3>Correlation heatmaps</h3>",
                 capped(MAX_HEATMAPS, len(with_matrix), "layers' heatmaps", "the first in forward order"),
                 note(f"At most {MAX_CHANNELS} channels per heatmap (the highest-variance ones of wider "
                      "layers, in channel order); blue −1, white 0, red +1."),
                 f'<div class="grid">{figs}</div>']
    return Section("correlation", "Correlation and effective rank", "".join(body))


# -- weight connectivity --------------------------------------------------------------------------
def _strongest(s: Mapping[str, Any]) -> str:
    top = _records(s.get("strongest"))[:3]
    shown = [f"{esc(p.get('in'))}→{esc(p.get('out'))} ({num(p.get('strength'), 2)})" for p in top]
    return ", ".join(shown) or "—"


def _layer_rows(found: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    rows = []
    for name, s in found:
        shape = "×".join(str(v) for v in s.get("shape") or [])
        warn = f' <span class="badge warn" title="{esc(s.get("note", ""))}">as stored</span>' \
            if s.get("orientation_ok") is False else ""
        rows.append([esc(name), esc(s.get("kind", "")), esc(shape) + warn, num(s.get("mean")),
                     num(s.get("max")), f'<span class="muted">{_strongest(s)}</span>'])
    return rows


def _path_rows(model: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for pair in _records(model.get("pairs")):
        for p in _records(pair.get("paths"))[:MAX_PATHS]:
            rows.append([esc(pair.get("from", "")), esc(pair.get("to", "")), esc(pair.get("mode", "")),
                         f"{esc(p.get('input'))} → {esc(p.get('via'))} → {esc(p.get('output'))}",
                         num(p.get("strength"))])
    return rows


def connectivity(data: Mapping[str, Any]) -> Section:
    found = [(n, s) for n, l in ordered_layers(data)
             if (s := layer_stat(l, "connectivity")) and s.get("available")]
    model = as_map((data.get("model") or {}).get("connectivity"))
    if not found and not _records(model.get("pairs")):
        return Section("connectivity", "Weight connectivity",
                       missing("Weight connectivity (stat 'connectivity')"))
    body = [note("Connection strength from input channel i to output channel o: the L2 norm of the kernel "
                 "joining them (|w| for a Linear layer).")]
    if found:
        body.append("<h3>Per layer</h3>" + table(["layer", "kind", "out × in", "mean", "max",
                                                  "strongest in→out"], _layer_rows(found)))
    paths = _path_rows(model)
    if paths:
        body.append(f"<h3>Strongest paths between consecutive layers (top {MAX_PATHS} per pair)</h3>"
                    + note("Channel i of the first layer's input → channel j between the layers → channel k "
                           "of the second layer's output; strength is the product of the two connections. "
                           "Consecutive in run order, not a traced graph.")
                    + table(["from", "to", "mode", "path i → j → k", "strength"], paths))
    unchained = _records(model.get("unchained"))
    if unchained:
        body.append(note("Not chained: " + "; ".join(str(u.get("reason", "")) for u in unchained) + "."))
    return Section("connectivity", "Weight connectivity", "".join(body))
