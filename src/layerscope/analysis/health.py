"""Health flags per layer and across depth, from the moments summaries.

Rules (thresholds are module constants, documented in docs/analyze.md):
- ``nonfinite`` (error): any NaN or ±Inf value in the layer's output.
- ``dead_channels`` (warn): at least one constant channel (max == min over all data seen);
  error when more than half of the channels are constant.
- ``saturated`` (warn): a bounded activation (sigmoid, tanh, hardtanh/ReLU6, softmax…) puts more
  than ``SATURATION_WARN`` of its values within 2% of its range limits.
- ``exploding`` / ``vanishing`` (warn): the layer's RMS is more than ``SCALE_RATIO`` times larger /
  smaller than the RMS of the first captured layer (forward order).
"""

from __future__ import annotations

import math
from typing import Any

from . import MODEL_ANALYSES

SATURATION_WARN = 0.5
SCALE_RATIO = 1e3
_RANK = {"ok": 0, "warn": 1, "error": 2}


def _layer_flags(moments: dict[str, Any], reference_rms: float) -> list[dict[str, str]]:
    flags = []
    if moments.get("nan", 0) or moments.get("inf", 0):
        flags.append(_flag("nonfinite", "error", f"{moments['nan']} NaN and {moments['inf']} Inf values"))
    dead, channels = moments.get("dead_channels", 0), moments.get("channels", 0)
    if dead:
        level = "error" if dead > channels / 2 else "warn"
        flags.append(_flag("dead_channels", level, f"{dead} of {channels} channels are constant"))
    sat = moments.get("saturation")
    if sat and sat["total"] > SATURATION_WARN:
        flags.append(_flag("saturated", "warn", f"{sat['total']:.0%} of values at the range limits"))
    rms = moments.get("rms")
    if rms and reference_rms and math.isfinite(rms) and math.isfinite(reference_rms) and reference_rms > 0:
        ratio = rms / reference_rms
        if ratio > SCALE_RATIO:
            flags.append(_flag("exploding", "warn", f"RMS {ratio:.3g}× that of the first layer"))
        elif ratio < 1 / SCALE_RATIO and dead < channels:
            flags.append(_flag("vanishing", "warn", f"RMS {ratio:.3g}× that of the first layer"))
    return flags


def _flag(name: str, level: str, detail: str) -> dict[str, str]:
    return {"flag": name, "level": level, "detail": detail}


@MODEL_ANALYSES.register("health")
def layer_health(layers: dict[str, Any]) -> dict[str, Any]:
    ordered = sorted(layers.values(), key=lambda r: r.meta.get("order", 0))
    moments = [r.stats.get("moments") or {} for r in ordered]
    reference = next((m["rms"] for m in moments if m.get("rms") and math.isfinite(m["rms"])), float("nan"))
    per_layer, counts = {}, {"ok": 0, "warn": 0, "error": 0}
    for result, mom in zip(ordered, moments, strict=True):
        flags = _layer_flags(mom, reference)
        status = max((f["level"] for f in flags), key=_RANK.get, default="ok")
        counts[status] += 1
        per_layer[result.meta["name"]] = {"status": status, "flags": flags}
    return {"layers": per_layer, "counts": counts}
