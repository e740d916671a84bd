"""Gradient flow after one backward pass: per-layer gradient norm, gradient/weight norm ratio, flags.

Flags are relative to the network itself, so that they do not depend on the scale of the loss: a layer is
``vanishing`` when its ratio is below ``vanishing_factor`` × the median ratio over layers, ``exploding``
when above ``exploding_factor`` × the median; ``zero`` (all gradients exactly 0), ``no_grad`` (trainable but
no gradient reached it: unused in the forward) and ``nonfinite`` (NaN/Inf) are absolute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class LayerGradient:
    name: str
    type: str
    grad_norm: float | None
    weight_norm: float
    ratio: float | None  # grad_norm / weight_norm; None when either is missing or the weight is all 0
    flag: str  # ok · vanishing · exploding · zero · no_grad · nonfinite


@dataclass
class GradientReport:
    vanishing_factor: float
    exploding_factor: float
    median_ratio: float | None
    layers: list[LayerGradient] = field(default_factory=list)

    @property
    def flagged(self) -> list[LayerGradient]:
        return [g for g in self.layers if g.flag != "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {"vanishing_factor": self.vanishing_factor, "exploding_factor": self.exploding_factor,
                "median_ratio": self.median_ratio, "layers": [dict(g.__dict__) for g in self.layers]}


def _norm(tensors: list[torch.Tensor]) -> float:
    """L2 norm over several tensors. Each tensor's norm is reduced in float32 (no copy for float32
    tensors); the few per-tensor norms are combined in float64. A float32 overflow is redone in float64,
    so that a large but finite gradient is not reported as non-finite."""
    total = 0.0
    for t in tensors:
        n = torch.linalg.vector_norm(t.detach(), dtype=torch.float32 if t.dtype != torch.float64 else None)
        value = float(n)
        if math.isinf(value) and bool(torch.isfinite(t).all()):
            value = float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64))
        total += value * value
    return math.sqrt(total)


def gradient_flow(model: nn.Module, *, vanishing_factor: float = 1e-3,
                  exploding_factor: float = 1e3) -> GradientReport:
    seen: set[int] = set()
    rows: list[LayerGradient] = []
    for name, m in model.named_modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in own)
        if not own:
            continue
        grads = [p.grad for p in own if p.grad is not None]
        w = _norm([p for p in own])
        g = _norm(grads) if grads else None
        ratio = g / w if g is not None and w > 0 and math.isfinite(g) else None
        flag = "no_grad" if g is None else "nonfinite" if not math.isfinite(g) else "zero" if g == 0 else "ok"
        rows.append(LayerGradient(name, type(m).__name__, g, w, ratio, flag))
    ratios = [r.ratio for r in rows if r.ratio is not None and r.flag == "ok"]
    median = float(np.median(ratios)) if ratios else None
    if median:
        for r in rows:
            if r.flag == "ok" and r.ratio is not None:
                if r.ratio < vanishing_factor * median:
                    r.flag = "vanishing"
                elif r.ratio > exploding_factor * median:
                    r.flag = "exploding"
    return GradientReport(vanishing_factor, exploding_factor, median, rows)
