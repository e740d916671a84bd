"""Per-layer value histogram: counts on the accumulator's power-of-two grid, plus quantiles."""

from __future__ import annotations

from typing import Any

from . import LAYER_ANALYSES

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@LAYER_ANALYSES.register("histogram")
def summarize_histogram(acc: Any, meta: dict[str, Any]) -> dict[str, Any]:
    if acc.total == 0:
        return {"total": 0, "counts": [], "edges": []}
    return {
        "total": acc.total,
        "counts": acc.counts.tolist(),
        "edges": acc.edges.tolist(),
        "bin_width": acc.width,
        "quantiles": dict(zip((f"{q:g}" for q in QUANTILES), acc.quantile(list(QUANTILES)).tolist(), strict=True)),
    }
