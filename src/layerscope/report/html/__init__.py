"""The self-contained HTML report: one ``report.html`` next to ``report.json``.

    from layerscope.report import ProbeResult
    from layerscope.report.html import render, write_html
    html = render(ProbeResult.load("report/"))      # a str; or write_html(result, "report/")

Everything is inline — CSS, a small vanilla script (sortable table, hover read-outs) and SVG plots
drawn in Python — and a Content-Security-Policy forbids every fetch, so the page makes no network
request. It is rendered from ``result.to_dict()`` (exactly what report.json holds), so rendering a
result and rendering the same result re-loaded from JSON give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..._io import atomic_write_text
from .. import SINKS
from ..result import ProbeResult
from . import connectivity, crossmodal, sections, spatial, temporal
from ._fmt import Section, esc

FILENAME = "report.html"

log = logging.getLogger(__name__)

SectionRenderer = Callable[[Mapping[str, Any]], Section]

#: Sections in page order; each renders whatever of its data the result holds.
SECTIONS: tuple[SectionRenderer, ...] = (
    sections.overview,
    sections.layer_table,
    sections.coverage,
    sections.distributions,
    temporal.spectra,
    temporal.states,
    spatial.density_grids,
    spatial.impact,
    connectivity.correlation,
    connectivity.connectivity,
    crossmodal.pairs,
    sections.configuration,
)


@cache
def _asset(name: str) -> str:
    return files(__name__).joinpath("assets", name).read_text(encoding="utf-8")


def _csp(script: str) -> str:
    """No fetch of any kind; only the inline script with this exact hash may run (no inline handlers)."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
            "img-src data:; font-src data:; base-uri 'none'; form-action 'none'")


def _header(data: Mapping[str, Any]) -> str:
    cfg = data.get("config") or {}
    model = cfg.get("model") or "model"
    sub = " · ".join(esc(v) for v in (cfg.get("data"), data.get("created")) if v)
    banner = ""
    if data.get("partial"):
        seen = esc(cfg.get("batches", "first"))
        banner = ('<div class="partial" role="alert"><strong>Partial run.</strong> The pass was interrupted: '
                  f"these statistics cover the {seen} batches seen before it stopped, "
                  "not all of the data.</div>")
    return (f'<header><div class="brand">layerscope report</div><h1>{esc(model)}</h1>'
            f'<div class="sub">{sub}</div></header>{banner}')


def _nav(parts: list[Section]) -> str:
    links = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in parts)
    return f'<nav aria-label="sections">{links}</nav>'


def _render_section(renderer: SectionRenderer, data: Mapping[str, Any]) -> Section:
    """One section; an unexpected error there costs that section, never the page (nor the JSON that
    ``ProbeResult.save`` writes after it)."""
    try:
        return renderer(data)
    except Exception as exc:
        log.warning("HTML report: section %r could not be rendered: %r", renderer.__name__, exc)
        name = renderer.__name__.replace("_", " ")
        return Section(f"error-{renderer.__name__}", name.capitalize(),
                       f'<p class="missing">This section could not be rendered ({esc(type(exc).__name__)}: '
                       f"{esc(exc)}); its data is in report.json.</p>")


def render_dict(data: Mapping[str, Any]) -> str:
    """The page for a report as a JSON dict (the content of report.json)."""
    parts = [_render_section(render_section, data) for render_section in SECTIONS]
    script = _asset("report.js")
    body = "".join(f'<section id="{s.id}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in parts)
    title = f"layerscope — {(data.get('config') or {}).get('model') or 'report'}"
    partial = " (partial)" if data.get("partial") else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_csp(script))}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="layerscope">'
        f"<title>{esc(title + partial)}</title><style>{_asset('report.css')}</style></head>"
        f'<body>{_header(data)}<div class="layout">{_nav(parts)}<main>{body}</main></div>'
        f'<div id="tip" role="tooltip" hidden></div><script>{script}</script></body></html>\n'
    )


def render(result: ProbeResult) -> str:
    """The self-contained HTML page of ``result`` (a ``str``; nothing is written)."""
    return render_dict(result.to_dict())


@SINKS.register("html")
def write_html(result: ProbeResult, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.html`` into ``out_dir`` atomically (a temporary file, then a rename)."""
    return atomic_write_text(Path(out_dir) / FILENAME, render(result))


__all__ = ["FILENAME", "SECTIONS", "render", "render_dict", "write_html"]
