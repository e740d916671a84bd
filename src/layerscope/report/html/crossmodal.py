"""Cross-modal section: significant (temporal feature, spatial feature) pairs after FDR control.

Reads ``model["crossmodal"]`` (see ``analysis/crossmodal.py``): two families of tests, ``channels``
(within each layer, channels as samples) and ``layers`` (layers as samples), each with ``tests``,
``permutations``, ``significant`` (``layer``, ``temporal``, ``spatial``, ``rho``, ``ci95``,
``p_value``, ``q_value``, ``n``), ``blocks`` (the full ρ matrices) and ``skipped``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import svg
from ._fmt import Section, as_map, capped, esc, figure, is_num, matrix, missing, note, num, table

MAX_PAIRS = 100
MAX_BLOCKS = 4
FAMILIES = (("channels", "within layers (channels as samples)"),
            ("layers", "across layers (layers as samples)"))


def _records(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, Sequence) else []


def _ci(p: Mapping[str, Any]) -> str:
    ci = p.get("ci95")
    if isinstance(ci, Sequence) and len(ci) == 2 and all(is_num(v) for v in ci):
        return f'<span class="muted">[{num(ci[0], 2)}, {num(ci[1], 2)}]</span>'
    return "—"


def _row(family: str, p: Mapping[str, Any]) -> list[str]:
    rho = p.get("rho")
    sign = "pos" if is_num(rho) and rho > 0 else "neg"
    scope = "across layers" if family == "layers" else p.get("layer", "")
    return [esc(scope), esc(p.get("temporal", "")), esc(p.get("spatial", "")),
            f'<span class="{sign}">{num(rho, 3)}</span>', _ci(p), num(p.get("p_value"), 2),
            num(p.get("q_value"), 2), num(p.get("n"))]


def _strength(item: tuple[str, Mapping[str, Any]]) -> float:
    """Sort key: strongest |ρ| first."""
    rho = item[1].get("rho")
    return -abs(rho) if is_num(rho) else 0.0


def _summary(name: str, title: str, fam: Mapping[str, Any]) -> str:
    skipped = as_map(fam.get("skipped"))
    text = (f"{title}: {num(fam.get('significant_count', 0))} significant of {num(fam.get('tests', 0))} "
            f"tests ({num(fam.get('permutations'))} permutations)")
    parts = [f"<li>{esc(text)}"]
    if skipped:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        parts.append(f' <span class="muted">— skipped: {esc(reasons)}</span>')
    if isinstance(fam.get("note"), str):
        parts.append(f' <span class="muted">— {esc(fam["note"])}</span>')
    return "".join(parts) + "</li>"


def _blocks(families: list[tuple[str, str, Mapping[str, Any]]]) -> list[tuple[str, Mapping[str, Any]]]:
    """(scope, block) pairs: across layers first, then the layers with the most significant pairs."""
    out = []
    for name, _, fam in sorted(families, key=lambda f: f[0] != "layers"):
        hits = [p.get("layer") for p in _records(fam.get("significant"))]
        blocks = sorted(as_map(fam.get("blocks")).items(), key=lambda kv: -hits.count(kv[0]))  # stable
        out += [("across layers" if name == "layers" else str(label), as_map(b)) for label, b in blocks]
    return out


def _block_heatmaps(families: list[tuple[str, str, Mapping[str, Any]]]) -> str:
    figs, blocks = [], _blocks(families)
    for scope, block in blocks:
        rho = matrix(block.get("rho"))
        t, s = block.get("temporal_features") or [], block.get("spatial_features") or []
        if rho and len(t) == len(rho) and len(s) == len(rho[0]) and len(figs) < MAX_BLOCKS:
            plot = svg.heatmap(rho, [str(x) for x in t], [str(x) for x in s], vmin=-1.0, vmax=1.0,
                               palette="diverging", cell=16, label=f"Spearman rho, {scope}")
            figs.append(figure(plot, f"Spearman ρ, {scope} (n = {block.get('n', '?')})"))
    if not figs:
        return ""
    return ("<h3>ρ matrices</h3>" + capped(len(figs), len(blocks), "blocks", "across layers first, then the "
                                           "layers with the most significant pairs")
            + f'<div class="grid">{"".join(figs)}</div>')


def pairs(data: Mapping[str, Any]) -> Section:
    cm = (data.get("model") or {}).get("crossmodal")
    cm = cm if isinstance(cm, Mapping) else {}
    families = [(n, t, cm[n]) for n, t in FAMILIES if isinstance(cm.get(n), Mapping)]
    if not families:
        reason = note(cm["note"]) if isinstance(cm.get("note"), str) else ""
        return Section("crossmodal", "Cross-modal pairs", missing("Cross-modal analysis") + reason)
    q = cm.get("fdr_q")
    found = [(n, p) for n, _, fam in families for p in _records(fam.get("significant"))]
    found.sort(key=_strength)
    at_q = f" at q ≤ {num(q)}" if is_num(q) else ""
    body = [note("Spearman ρ between temporal features (from the spectra) and spatial features (density, "
                 "correlation, impact, connectivity, moments); p-values from a permutation test, q-values "
                 f"after Benjamini–Hochberg{at_q}; 95% CI by Fisher's z."),
            "<ul class=\"families\">" + "".join(_summary(*f) for f in families) + "</ul>"]
    if found:
        body += [capped(MAX_PAIRS, len(found), "significant pairs", "the largest |ρ|"),
                 table(["scope", "temporal feature", "spatial feature", "ρ", "95% CI", "p", "q", "n"],
                       [_row(n, p) for n, p in found[:MAX_PAIRS]])]
    else:
        body.append('<p class="ok-line">No pair passed the false-discovery-rate threshold.</p>')
    body.append(_block_heatmaps(families))
    return Section("crossmodal", "Cross-modal pairs", "".join(body))
