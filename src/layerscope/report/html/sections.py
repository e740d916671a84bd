"""The sections every run has: overview and health, the per-layer table, coverage, activation
distributions, and the run configuration. Each renderer takes the result as a JSON dict (what
``report.json`` holds) and returns a :class:`Section`; missing data gives a "not computed" note.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import svg
from ._fmt import (
    Section,
    as_map,
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
    pct,
    ratio_bar,
    sort_key,
    table,
)

STATUS = ("ok", "warn", "error")  # the only values that become CSS classes
MAX_HISTOGRAMS = 48
MAX_LIST = 60


def badge(status: Any) -> str:
    if not status or status == "—":
        return "—"
    s = status if status in STATUS else "unknown"
    return f'<span class="badge {s}">{esc(status)}</span>'


def _health(data: Mapping[str, Any]) -> dict[str, Any]:
    return (data.get("model") or {}).get("health") or {}


def _fact(label: str, value: str) -> str:
    return f'<div class="fact"><div class="fact-v">{value}</div><div class="fact-k">{esc(label)}</div></div>'


def overview(data: Mapping[str, Any]) -> Section:
    cfg, layers = data.get("config") or {}, ordered_layers(data)
    health = _health(data)
    counts = health.get("counts") or {}
    seen = [(l.get("meta") or {}).get("samples") for _, l in layers]
    samples = max((int(m) for m in seen if is_num(m)), default=None)
    facts = [_fact("layers", num(len(layers))), _fact("batches", num(cfg.get("batches"))),
             _fact("samples", num(samples))]
    facts += [_fact(f"layers {s}", f'<span class="count {s}">{num(counts.get(s, 0))}</span>')
              for s in STATUS] if counts else [_fact("health", "—")]
    body = [f'<div class="facts">{"".join(facts)}</div>']
    if not health:
        body.append(missing("Health checks"))
    else:
        body.append(_flag_table(health, layers))
    return Section("overview", "Overview and health", "".join(body))


def _flag_table(health: Mapping[str, Any], layers: list[tuple[str, dict[str, Any]]]) -> str:
    per_layer = health.get("layers") or {}
    rows = []
    for name, _ in layers:
        h = per_layer.get(name) or {}
        for f in h.get("flags") or []:
            rows.append([esc(name), badge(f.get("level")), esc(f.get("flag", "")), esc(f.get("detail", ""))])
    if not rows:
        return '<p class="ok-line">No health flag raised on any layer.</p>'
    return "<h3>Health flags</h3>" + table(["layer", "level", "flag", "detail"], rows)


# -- the sortable per-layer table ------------------------------------------------------------------
def _cell(text: str, key: Any = None, cls: str = "") -> str:
    k = sort_key(key) if is_num(key) or key is None else esc(key)
    c = f' class="{cls}"' if cls else ""
    return f'<td data-sort="{k}"{c}>{text}</td>'


def _nc(cov: Mapping[str, Any]) -> tuple[str, float | None]:
    nc = cov.get("nc") or {}
    key = "0.5" if "0.5" in nc else next(iter(nc), None)
    frac = (nc.get(key) or {}).get("fraction") if key is not None else None
    return key or "", frac if is_num(frac) else None


def _histogram_of(layer: Mapping[str, Any]) -> tuple[list[float | None], list[float | None]]:
    h = layer_stat(layer, "histogram")
    counts, edges = floats(h.get("counts")), floats(h.get("edges"))
    if counts and len(edges) == len(counts) + 1 and None not in edges:
        return counts, edges
    return [], []


def _table_row(i: int, name: str, layer: Mapping[str, Any], health: Mapping[str, Any]) -> str:
    meta, m = layer.get("meta") or {}, layer_stat(layer, "moments")
    rate = next(iter((m.get("activation_rate") or {}).values()), None)
    _, nc = _nc(layer_stat(layer, "coverage"))
    bad = (m.get("nan") or 0) + (m.get("inf") or 0)
    status = health.get("status", "—")
    flags = ", ".join(str(f.get("flag", "")) for f in health.get("flags") or [])
    counts, _ = _histogram_of(layer)
    shape = "×".join(str(d) for d in meta.get("shape") or [])
    cells = [
        _cell(str(i), i, "num"), _cell(f'<span class="lname">{esc(name)}</span>', name, "name"),
        _cell(esc(meta.get("module_type", "")), meta.get("module_type", "")), _cell(esc(shape), shape),
        *(_cell(num(m.get(k)), m.get(k), "num") for k in ("mean", "std", "min", "max")),
        _cell(pct(m.get("dead_fraction")), m.get("dead_fraction"), "num"),
        _cell(pct(rate), rate, "num"), _cell(pct(nc), nc, "num"),
        _cell(f"{m.get('nan', 0)}/{m.get('inf', 0)}" if bad else "0", bad, "num"),
        _cell(badge(status) + (f' <span class="flags">{esc(flags)}</span>' if flags else ""),
              STATUS.index(status) if status in STATUS else None, "health"),
        f'<td class="spark-cell">{svg.sparkline(counts, label=f"distribution of {name}") if counts else "—"}'
        "</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def layer_table(data: Mapping[str, Any]) -> Section:
    layers = ordered_layers(data)
    if not layers:
        return Section("layers", "Per-layer statistics", missing("Per-layer statistics"))
    thresholds = (data.get("config") or {}).get("thresholds") or [0]
    nc_key = next((k for _, l in layers if (k := _nc(layer_stat(l, "coverage"))[0])), "0.5")
    head = ["#", "layer", "type", "shape", "mean", "std", "min", "max", "dead",
            f"act&gt;{esc(thresholds[0])}", f"NC τ={esc(nc_key)}", "NaN/Inf", "health"]
    th = "".join(f'<th class="sortable" tabindex="0" aria-sort="none">{h}</th>' for h in head)
    th += '<th title="histogram of all values (square-root heights)">hist.</th>'
    per_layer = _health(data).get("layers") or {}
    rows = "".join(_table_row(i, n, l, per_layer.get(n) or {}) for i, (n, l) in enumerate(layers))
    body = (note("Click a column header to sort; click again to reverse.")
            + f'<div class="table-wrap"><table class="data sortable-table" id="layer-table">'
            f"<thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table></div>")
    return Section("layers", "Per-layer statistics", body)


# -- coverage ------------------------------------------------------------------------------------
_CRITERIA = ("tknc", "kmnc", "nbc", "snac")


def _criteria(cov: Mapping[str, Any]) -> list[tuple[str, Any]]:
    out = [(f"NC τ={t}", as_map(c).get("fraction")) for t, c in as_map(cov.get("nc")).items()]
    return out + [(k.upper(), as_map(cov.get(k)).get("fraction")) for k in _CRITERIA]


def coverage(data: Mapping[str, Any]) -> Section:
    model = (data.get("model") or {}).get("coverage") or {}
    layers = [(n, c) for n, l in ordered_layers(data) if (c := layer_stat(l, "coverage"))]
    if not model and not layers:
        return Section("coverage", "Neuron coverage", missing("Neuron coverage"))
    body = []
    if model:
        rows = [[esc(k), ratio_bar(f), pct(f)] for k, f in _criteria(model)]
        body.append(f"<h3>Whole model ({esc(model.get('neurons', '—'))} neurons)</h3>"
                    + table(["criterion", "", "covered"], rows, cls="data compact"))
        if not any(model.get(k) for k in ("kmnc", "nbc", "snac")):
            body.append(note("KMNC, NBC and SNAC need neuron ranges from a reference pass "
                             "(--reference-data); this run had none."))
    if layers:
        names = [k for k, _ in _criteria(layers[0][1])]
        rows = [[esc(n)] + [pct(f) for _, f in _criteria(c)] for n, c in layers]
        body.append("<h3>Per layer</h3>" + table(["layer", *map(esc, names)], rows))
    return Section("coverage", "Neuron coverage", "".join(body))


# -- activation histograms -----------------------------------------------------------------------
def distributions(data: Mapping[str, Any]) -> Section:
    found = [(n, *h) for n, l in ordered_layers(data) if (h := _histogram_of(l))[0]]
    if not found:
        return Section("distributions", "Activation distributions", missing("Activation histograms"))
    figs = [figure(svg.histogram(c, e, x_label="activation value", label=f"histogram of {n}"), n)
            for n, c, e in found[:MAX_HISTOGRAMS]]
    body = capped(MAX_HISTOGRAMS, len(found), "layers", "the first in forward order")
    return Section("distributions", "Activation distributions",
                   body + f'<div class="grid">{"".join(figs)}</div>')


# -- configuration -------------------------------------------------------------------------------
def _value(v: Any) -> str:
    if isinstance(v, list) and len(v) > MAX_LIST:
        shown = ", ".join(str(x) for x in v[:MAX_LIST])
        return esc(f"{shown}, … ({len(v) - MAX_LIST} more)")
    if isinstance(v, (list, dict)):
        return esc(json.dumps(v, ensure_ascii=False))
    return "—" if v is None else esc(v)


def _kv(d: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{_value(v)}</td></tr>" for k, v in d.items())
    return f'<div class="table-wrap"><table class="kv"><tbody>{rows}</tbody></table></div>'


def configuration(data: Mapping[str, Any]) -> Section:
    cfg, env = data.get("config") or {}, data.get("environment") or {}
    meta = {"schema_version": data.get("schema_version"), "created": data.get("created"),
            "partial": bool(data.get("partial"))}
    body = ["<h3>Run</h3>", _kv({**meta, **cfg}) if cfg else missing("Run configuration"),
            "<h3>Environment</h3>", _kv(env) if env else missing("Environment")]
    return Section("config", "Run configuration", "".join(body))
