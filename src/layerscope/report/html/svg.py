"""Inline SVG plots drawn in Python: heatmaps, line plots, histograms, sparklines, stacked bars.

No plotting library and no network: each function returns one ``<svg>`` string. Every text that
reaches a plot is escaped. Heatmap cells are quantised to ``LEVELS`` colours and drawn as one path
per colour (runs of equal cells merged), which keeps a 64×64 matrix to tens of kilobytes; values for
the hover read-out ride along in a ``data-v`` attribute that ``assets/report.js`` reads (never as HTML).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

from ._fmt import attr_json, esc, is_num, num

LEVELS = 32
MISSING = "#d9dce1"
CATEGORICAL = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
               "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
_SEQUENTIAL = ((0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)),
               (0.75, (94, 201, 98)), (1.0, (253, 231, 37)))  # viridis anchors
_DIVERGING = ((0.0, (33, 102, 172)), (0.25, (103, 169, 207)), (0.5, (247, 247, 247)),
              (0.75, (239, 138, 98)), (1.0, (178, 24, 43)))  # RdBu reversed: −1 blue … +1 red
PALETTES = {"sequential": _SEQUENTIAL, "diverging": _DIVERGING}
CHAR_W = 6.2  # approximate width of one 11px sans-serif character


def color(t: float, palette: str = "sequential") -> str:
    """``#rrggbb`` at position ``t`` ∈ [0, 1] of a palette (linear between anchors)."""
    anchors = PALETTES[palette]
    t = min(max(t, 0.0), 1.0)
    for (t0, c0), (t1, c1) in pairwise(anchors):
        if t <= t1:
            f = (t - t0) / (t1 - t0)
            return "#" + "".join(f"{round(a + f * (b - a)):02x}" for a, b in zip(c0, c1, strict=True))
    return "#" + "".join(f"{c:02x}" for c in anchors[-1][1])


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def _clip_label(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "…"


def _label(x: float, y: float, text: str, *, anchor: str = "start", cls: str = "lbl",
           chars: int = 40, rotate: bool = False) -> str:
    full = str(text)
    shown = _clip_label(full, chars)
    title = f"<title>{esc(full)}</title>" if shown != full else ""
    rot = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}"{rot}>'
            f"{title}{esc(shown)}</text>")


def _svg(width: float, height: float, body: str, cls: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}" role="img" aria-label="{esc(label)}" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">{body}</svg>')


def _hit(x: float, y: float, w: float, h: float, shape: tuple[int, int], values: Sequence[str], *,
         rows: Sequence[str] = (), cols: Sequence[str] = (), edges: Sequence[float] = (),
         sep: str = " × ") -> str:
    """A transparent rectangle whose hover read-out (report.js) names the cell under the pointer:
    by its row/column labels, by bin ``[edges[c], edges[c+1])``, or else by its (row, column) index."""
    extra = "".join((f' data-rl="{attr_json(list(rows))}"' if rows else "",
                     f' data-cl="{attr_json(list(cols))}"' if cols else "",
                     f' data-edges="{esc(",".join(num(e) for e in edges))}"' if edges else ""))
    return (f'<rect class="hit" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="transparent" '
            f'data-rows="{shape[0]}" data-cols="{shape[1]}" data-v="{esc(",".join(values))}" '
            f'data-sep="{esc(sep)}"{extra}/>')


def _level(v: float | None, vmin: float, vmax: float) -> int:
    if v is None:
        return -1
    t = (v - vmin) / (vmax - vmin) if vmax > vmin else 0.5
    return min(max(int(t * LEVELS), 0), LEVELS - 1)


def _cell_paths(values: Sequence[Sequence[float | None]], vmin: float, vmax: float, palette: str) -> str:
    """One stroked ``<path>`` per colour level: each run of equal-level cells in a row is a segment of
    width 1 along the row's centre line, written relative to the previous segment's end (compact)."""
    runs: dict[int, list[tuple[int, int, int]]] = {}
    for y, row in enumerate(values):
        x = 0
        while x < len(row):
            lv, start = _level(row[x], vmin, vmax), x
            while x < len(row) and _level(row[x], vmin, vmax) == lv:
                x += 1
            runs.setdefault(lv, []).append((y, start, x - start))
    paths = []
    for lv in sorted(runs):
        d, at = [], None  # at: the pen position (x, y) after the previous segment
        for y, start, n in runs[lv]:
            d.append(f"M{start} {y + 0.5:g}h{n}" if at is None else f"m{start - at[0]} {y - at[1]}h{n}")
            at = (start + n, y)
        stroke = MISSING if lv < 0 else color((lv + 0.5) / LEVELS, palette)
        paths.append(f'<path stroke="{stroke}" d="{"".join(d)}"/>')
    return "".join(paths)


def _colorbar(x: float, y: float, h: float, vmin: float, vmax: float, palette: str) -> str:
    steps = 16
    rects = "".join(
        f'<rect x="{x:.1f}" y="{y + h * (steps - 1 - i) / steps:.1f}" width="10" '
        f'height="{h / steps + 0.5:.1f}" fill="{color((i + 0.5) / steps, palette)}"/>' for i in range(steps)
    )
    return (rects + _label(x + 14, y + 8, num(vmax), cls="tick")
            + _label(x + 14, y + h, num(vmin), cls="tick"))


def heatmap(values: Sequence[Sequence[float | None]], row_labels: Sequence[str], col_labels: Sequence[str],
            *, vmin: float | None = None, vmax: float | None = None, palette: str = "sequential",
            cell: float = 12.0, label: str = "heatmap", rotate_cols: bool = True, colorbar: bool = True,
            digits: int = 3) -> str:
    """A matrix as coloured cells with row/column labels, a colour bar and a hover read-out
    (values to ``digits`` significant digits)."""
    finite = [v for row in values for v in row if v is not None]
    lo = vmin if vmin is not None else (min(finite) if finite else 0.0)
    hi = vmax if vmax is not None else (max(finite) if finite else 1.0)
    n_rows, n_cols = len(values), len(values[0]) if values else 0
    # label every k-th row / column so that labels never overlap
    every_r = max(1, math.ceil(11 / cell))
    widest = max((len(str(s)) for s in col_labels), default=1) * CHAR_W + 6
    every_c = every_r if rotate_cols else max(1, math.ceil(widest / cell))
    left = min(max((len(s) for s in row_labels), default=0) * CHAR_W, 215) + 8 if row_labels else 2
    top = 2.0 if not col_labels else 18.0
    if col_labels and rotate_cols:
        top = min(max(len(s) for s in col_labels) * CHAR_W, 215) + 8
    w, h = n_cols * cell, n_rows * cell
    parts = [f'<g transform="translate({left:.1f},{top:.1f}) scale({cell:g})" shape-rendering="crispEdges" '
             f'fill="none" stroke-width="1">', _cell_paths(values, lo, hi, palette), "</g>"]
    for i, name in enumerate(row_labels):
        if i % every_r == 0:
            parts.append(_label(left - 4, top + (i + 0.5) * cell + 4, name, anchor="end", chars=34))
    for j, name in enumerate(col_labels):
        if j % every_c == 0:
            x = left + (j + 0.5) * cell
            chars = max(int(cell * every_c / CHAR_W), 3)
            parts.append(_label(x + 4, top - 4, name, rotate=True, chars=34) if rotate_cols
                         else _label(x, top - 5, name, anchor="middle", chars=chars))
    cells = [num(v, digits) if v is not None else "—" for row in values for v in row]
    parts.append(_hit(left, top, w, h, (n_rows, n_cols), cells, rows=[str(r) for r in row_labels],
                      cols=[str(c) for c in col_labels]))
    height = top + max(h, 40 if colorbar else 0) + 4
    if not colorbar:
        return _svg(left + w + 2, height, "".join(parts), "heatmap", label)
    parts.append(_colorbar(left + w + 10, top, max(h, 40), lo, hi, palette))
    return _svg(left + w + 64, height, "".join(parts), "heatmap", label)


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Ticks of a log10 axis over [lo, hi] (log10 units) as (position, label): whole decades ``10ᵏ``
    when the axis spans two or more, else the 1-2-5 values inside it."""
    if hi - lo >= 2:
        step = max(1, math.ceil((hi - lo) / 6))
        return [(float(k), "10" + str(k).translate(_SUPERSCRIPT))
                for k in range(math.ceil(lo), math.floor(hi) + 1) if k % step == 0]
    values = [m * 10.0**k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
    return [(math.log10(v), num(v, 2)) for v in values if lo - 1e-9 <= math.log10(v) <= hi + 1e-9]


def _axis_y(x0: float, y0: float, width: float, height: float, lo: float, hi: float,
            log: bool) -> tuple[str, Callable[[float], float]]:
    """Left axis ticks and a value → pixel function (log10 axes take log values in)."""
    def to_px(v: float) -> float:
        return y0 + height - (v - lo) / (hi - lo or 1.0) * height

    ticks = log_ticks(lo, hi) if log else [(t, num(t)) for t in nice_ticks(lo, hi, 4)]
    out = []
    for t, text in ticks:
        y = to_px(t)
        out.append(f'<line class="gridline" x1="{x0}" x2="{x0 + width:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(_label(x0 - 4, y + 3.5, text, anchor="end", cls="tick"))
    return "".join(out), to_px


def line_plot(series: Sequence[tuple[str, Sequence[float], Sequence[float | None]]], *, x_label: str = "",
              y_label: str = "", log_y: bool = False, width: float = 540, height: float = 240,
              label: str = "line plot") -> str:
    """``(name, x, y)`` lines on shared axes, a legend on the right; ``log_y`` plots log10 of y > 0."""
    def tr(v: float | None) -> float | None:
        if v is None or (log_y and v <= 0):
            return None
        return math.log10(v) if log_y else v

    lines = [(name, [float(v) for v in x], [tr(v) for v in y]) for name, x, y in series]
    finite = [v for _, _, ys in lines for v in ys if v is not None]
    xs = [v for _, x, _ in lines for v in x]
    if not finite or not xs:
        return _svg(width, 40, _label(8, 24, "no finite values to plot", cls="lbl"), "lineplot", label)
    lo, hi = min(finite), max(finite)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    if log_y:
        lo, hi = math.floor(lo), math.ceil(hi)
    left, top, legend_w, bottom = 54.0, 10.0, 150.0, 34.0
    pw, ph = width - left - legend_w - 10, height - top - bottom
    x_lo, x_hi = min(xs), max(xs)

    def px(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo or 1.0) * pw

    grid, py = _axis_y(left, top, pw, ph, lo, hi, log_y)
    parts = [grid]
    for t in nice_ticks(x_lo, x_hi, 5):
        parts.append(_label(px(t), top + ph + 14, num(t), anchor="middle", cls="tick"))
    parts.append(f'<rect class="frame" x="{left}" y="{top}" width="{pw:.1f}" height="{ph:.1f}" fill="none"/>')
    for k, (name, x, ys) in enumerate(lines):
        c = CATEGORICAL[k % len(CATEGORICAL)]
        d, pen = [], "M"
        for xv, yv in zip(x, ys, strict=True):
            if yv is None:
                pen = "M"
                continue
            d.append(f"{pen}{px(xv):.1f} {py(yv):.1f}")
            pen = "L"
        parts.append(f'<path class="series" stroke="{c}" fill="none" d="{"".join(d)}">'
                     f"<title>{esc(name)}</title></path>")
        ly = top + 6 + 14 * k
        if ly < top + ph:
            parts.append(f'<rect x="{left + pw + 12:.1f}" y="{ly - 4:.1f}" width="10" height="3" '
                         f'fill="{c}"/>')
            parts.append(_label(left + pw + 26, ly, name, chars=20))
    parts.append(_label(left + pw / 2, height - 4, x_label, anchor="middle", cls="axis"))
    parts.append(_label(12, top + ph / 2, y_label, anchor="middle", cls="axis", rotate=True))
    return _svg(width, height, "".join(parts), "lineplot", label)


def histogram(counts: Sequence[float], edges: Sequence[float], *, x_label: str = "", width: float = 320,
              height: float = 150, label: str = "histogram", fill: str = "#4e79a7") -> str:
    """Bars over bin ``edges`` (len(counts) + 1 of them), heights relative to the tallest bar."""
    n = len(counts)
    top_count = max((c for c in counts if is_num(c)), default=0) or 1
    left, top, bottom = 8.0, 6.0, 30.0
    pw, ph = width - 2 * left, height - top - bottom
    lo, hi = float(edges[0]), float(edges[-1])
    def px(v: float) -> float:
        return left + (v - lo) / (hi - lo or 1.0) * pw

    d = []
    for i, c in enumerate(counts):
        if is_num(c) and c > 0:
            bh = max(c / top_count * ph, 0.8)
            x0, x1 = px(float(edges[i])), px(float(edges[i + 1]))
            base = top + ph
            d.append(f"M{x0:.1f} {base:.1f}V{base - bh:.1f}H{max(x1 - 0.4, x0 + 0.6):.1f}V{base:.1f}z")
    parts = [f'<path fill="{fill}" d="{"".join(d)}"/>',
             f'<line class="frame" x1="{left}" x2="{left + pw}" y1="{top + ph:.1f}" y2="{top + ph:.1f}"/>']
    for t in nice_ticks(lo, hi, 4):
        parts.append(_label(px(t), top + ph + 12, num(t), anchor="middle", cls="tick"))
    parts.append(_label(left + pw / 2, height - 3, x_label, anchor="middle", cls="axis"))
    parts.append(_hit(left, top, pw, ph, (1, n), [num(c) for c in counts], edges=[float(e) for e in edges]))
    return _svg(width, height, "".join(parts), "histogram", label)


def sparkline(counts: Sequence[float], *, width: float = 72, height: float = 20,
              label: str = "distribution") -> str:
    """A tiny bar chart (a table-cell histogram), sqrt-compressed heights: bin ``i`` is x ∈ [i, i+1] of a
    ``bins × 100`` view box stretched to ``width × height`` (integer coordinates keep it short)."""
    finite = [c if is_num(c) and c > 0 else 0.0 for c in counts]
    top = max(finite, default=0) or 1
    bars = [(i, max(round(math.sqrt(c / top) * 100), 3)) for i, c in enumerate(finite) if c > 0]
    d = "".join(f"M{i} 100v-{h}h1v{h}z" for i, h in bars)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" role="img" aria-label="{esc(label)}" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {max(len(finite), 1)} 100" '
            f'preserveAspectRatio="none"><path fill="#4e79a7" d="{d}"/></svg>')
