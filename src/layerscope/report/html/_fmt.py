"""Text helpers shared by the HTML sections: escaping, number formats, notes, and the section type.

Every string that came from a result (layer names, module types, config values, flag details) goes
through :func:`esc` before it reaches the page — in element text, attributes and SVG ``<text>`` alike.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NOT_COMPUTED = "not computed in this run"


@dataclass(frozen=True)
class Section:
    """One block of the page: an anchor id, a title for the navigation, and its HTML body."""

    id: str
    title: str
    body: str


def esc(value: Any) -> str:
    """HTML-escape any value for element text *and* quoted attributes (``&<>"'``)."""
    return html.escape(str(value), quote=True)


def attr_json(value: Any) -> str:
    """A JSON value for a ``data-*`` attribute (escaped; scripts read it with ``getAttribute``)."""
    return esc(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, digits: int = 3) -> str:
    """A compact number: ``0.0955``, ``1.82``, ``1.2e+05``; an em dash for missing / non-finite."""
    if not is_num(x):
        return "—"
    if isinstance(x, int) and abs(x) < 10**6:
        return f"{x:,}"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e5 or x == 0 else f"{x:.{max(digits - 1, 1)}e}"


def pct(x: Any) -> str:
    if not is_num(x):
        return "—"
    return f"{100 * x:.1f}%" if 0 < abs(x) < 0.1 else f"{100 * x:.0f}%"


def sort_key(x: Any) -> str:
    """The ``data-sort`` value of a table cell: the raw number, or empty (sorted last) when missing."""
    return f"{float(x):.6g}" if is_num(x) else ""  # 6 digits order any table; full values are in the JSON


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def missing(what: str) -> str:
    """The standard body of a section (or part of one) whose data this run did not produce."""
    return f'<p class="missing">{esc(what)}: {NOT_COMPUTED}.</p>'


def capped(shown: int, total: int, what: str, rule: str) -> str:
    """A visible note when a plot or list shows only part of the data (bounded page size)."""
    if total <= shown:
        return ""
    return note(f"Showing {shown} of {total} {what} ({rule}); the full data is in report.json.")


def ordered_layers(data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, layer) pairs in forward order (``meta.order``), ties kept in insertion order."""
    items = list((data.get("layers") or {}).items())
    return sorted(items, key=lambda kv: (kv[1].get("meta") or {}).get("order", 0))


def layer_stat(layer: Mapping[str, Any], stat: str) -> dict[str, Any]:
    value = (layer.get("stats") or {}).get(stat)
    return value if isinstance(value, dict) else {}


def as_map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one (a malformed entry renders as missing)."""
    return value if isinstance(value, Mapping) else {}


def floats(values: Any) -> list[float | None]:
    """A flat list of finite floats (None for missing / non-finite entries); [] for non-lists."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        return []
    return [float(v) if is_num(v) else None for v in values]


def matrix(values: Any) -> list[list[float | None]]:
    """A rectangular list of rows of floats, or [] when ``values`` is not a non-empty 2-D list."""
    if not isinstance(values, Sequence) or isinstance(values, str) or not values:
        return []
    rows = [floats(r) for r in values]
    width = len(rows[0])
    return rows if width and all(len(r) == width for r in rows) else []


def table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "data") -> str:
    """A plain table; ``head`` and cells are already-escaped HTML fragments."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (f'<div class="table-wrap"><table class="{cls}"><thead><tr>{th}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def figure(svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="plot">{svg}{cap}</figure>'


def stacked_bar(parts: Sequence[tuple[str, float, str]], *, label: str = "composition") -> str:
    """One horizontal bar split into (name, amount, colour) parts, in HTML/CSS (lighter than SVG);
    each part names itself on hover."""
    total = sum(f for _, f, _ in parts if is_num(f) and f > 0) or 1.0
    shown = [(name, f / total, c) for name, f, c in parts if is_num(f) and f > 0]
    segs = "".join(f'<i style="width:{100 * f:.2f}%;background:{c}" title="{esc(name)}: {f:.0%}"></i>'
                   for name, f, c in shown)
    return f'<span class="stack" role="img" aria-label="{esc(label)}">{segs}</span>'


def ratio_bar(fraction: float | None, *, fill: str = "#59a14f") -> str:
    """A progress-style bar for a fraction in [0, 1] (coverage, effective-rank ratio …), in HTML/CSS."""
    f = min(max(fraction, 0.0), 1.0) if is_num(fraction) else 0.0
    return f'<span class="bar"><i style="width:{100 * f:.1f}%;background:{fill}"></i></span>'
