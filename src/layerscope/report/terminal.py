"""Terminal summary: one row per layer (rich table)."""

from __future__ import annotations

import io
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from .result import ProbeResult

_STATUS_STYLE = {"ok": "green", "warn": "yellow", "error": "bold red"}


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def _pct(x: Any) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _coverage_cell(cov: dict[str, Any] | None) -> str:
    if not cov:
        return "—"
    nc = cov.get("nc") or {}
    key = "0.5" if "0.5" in nc else next(iter(nc), None)
    return _pct((nc[key] or {}).get("fraction")) if key is not None else "—"


def _row(name: str, layer: Any, health: dict[str, Any]) -> list[str]:
    m = layer.stats.get("moments") or {}
    rate = next(iter((m.get("activation_rate") or {}).values()), None)
    status = health.get("status", "ok")
    flags = ", ".join(f["flag"] for f in health.get("flags", []))
    nonfinite = (m.get("nan") or 0) + (m.get("inf") or 0)
    return [
        name,
        layer.meta.get("module_type", ""),
        "×".join(str(d) for d in layer.meta.get("shape", [])),
        _num(m.get("mean")), _num(m.get("std")), _num(m.get("min")), _num(m.get("max")),
        _pct(m.get("dead_fraction")), _pct(rate), _coverage_cell(layer.stats.get("coverage")),
        f"{m.get('nan', 0)}/{m.get('inf', 0)}" if nonfinite else "0",
        f"[{_STATUS_STYLE[status]}]{status}[/]" + (f" {flags}" if flags else ""),
    ]


def build_table(result: ProbeResult) -> Table:
    thresholds = result.config.get("thresholds") or [0.0]
    title = "layerscope — per-layer statistics" + (" (PARTIAL: run was interrupted)" if result.partial else "")
    table = Table(title=title, header_style="bold", show_lines=False)
    for col in ("layer", "type", "shape", "mean", "std", "min", "max", "dead",
                f"act>{thresholds[0]:g}", "NC τ=.5", "NaN/Inf", "health"):
        table.add_column(col, justify="left" if col in ("layer", "type", "shape", "health") else "right")
    health = (result.model.get("health") or {}).get("layers", {})
    for name, layer in result.layers.items():
        table.add_row(*_row(name, layer, health.get(name, {})))
    return table


def _frac(block: Any) -> str:
    return _pct(block.get("fraction")) if isinstance(block, dict) else "—"


def summary_lines(result: ProbeResult) -> list[str]:
    """A few lines under the table: model-level findings of the analyses that ran."""
    model, lines = result.model, []
    health = (model.get("health") or {}).get("counts")
    if health:
        lines.append(f"health: {health['ok']} ok, {health['warn']} warn, {health['error']} error")
    cov = model.get("coverage") or {}
    if cov.get("neurons"):
        parts = [f"NC τ=0.5 {_frac((cov.get('nc') or {}).get('0.5'))}", f"TKNC {_frac(cov.get('tknc'))}"]
        parts += [f"{k.upper()} {_frac(cov[k])}" for k in ("kmnc", "nbc", "snac") if cov.get(k)]
        lines.append(f"coverage over {cov['neurons']} neurons: " + ", ".join(parts))
    temporal = model.get("temporal") or {}
    if temporal.get("state"):
        states = ", ".join(f"{n} {s}" for n, s in zip(temporal["layers"], temporal["state"], strict=False) if s)
        lines.append(f"spectral state: {states}")
    cross = (model.get("crossmodal") or {}).get("channels") or {}
    if cross.get("tests"):
        lines.append(f"cross-modal: {cross['significant_count']} of {cross['tests']} channel-level "
                     f"correlations significant at FDR q={model['crossmodal'].get('fdr_q')}")
    return lines


def print_summary(result: ProbeResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(build_table(result))
    for line in summary_lines(result):
        console.print(line, highlight=False)


def render_text(result: ProbeResult, width: int = 160) -> str:
    buf = io.StringIO()
    print_summary(result, Console(file=buf, width=width, no_color=True, force_terminal=False))
    return buf.getvalue()
