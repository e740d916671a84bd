"""Per-layer summary of the moments accumulator: layer-level and per-channel statistics."""

from __future__ import annotations

from typing import Any

import torch

from . import LAYER_ANALYSES


def _pooled(count: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor) -> tuple[int, float, float]:
    """Count, mean and population std of the union of channels (Chan's pooled M2, float64)."""
    n = int(count.sum())
    if n == 0:
        return 0, float("nan"), float("nan")
    w = count.to(torch.float64)
    mu = float((w * mean).sum() / n)
    m2_total = float(m2.sum() + (w * (mean - mu) ** 2).sum())
    return n, mu, (m2_total / n) ** 0.5


@LAYER_ANALYSES.register("moments")
def summarize_moments(acc: Any, meta: dict[str, Any]) -> dict[str, Any]:
    if acc.count is None:
        return {"channels": 0, "count": 0}
    count, mean, m2 = acc.count.cpu(), acc.mean.cpu(), acc.m2.cpu()
    cmin, cmax = acc.min.cpu(), acc.max.cpu()
    n, mu, std = _pooled(count, mean, m2)
    seen = count > 0
    total = (count + acc.nan.cpu() + acc.inf.cpu()).to(torch.float64).clamp(min=1)
    per_channel_n = count.to(torch.float64).clamp(min=1)
    dead = seen & (cmax == cmin)  # a constant channel carries no information (an always-zero ReLU too)
    rates = acc.above.cpu().to(torch.float64) / per_channel_n  # [T, C]
    n_user = len(meta.get("thresholds", acc.thresholds))
    out: dict[str, Any] = {
        "channels": int(count.numel()),
        "count": n,
        "mean": mu,
        "std": std,
        "rms": (mu * mu + std * std) ** 0.5 if n else float("nan"),
        "min": float(cmin[seen].min()) if bool(seen.any()) else float("nan"),
        "max": float(cmax[seen].max()) if bool(seen.any()) else float("nan"),
        "dead_channels": int(dead.sum()),
        "dead_fraction": float(dead.sum()) / max(int(count.numel()), 1),
        "zero_fraction": float(acc.zeros.sum()) / max(n, 1),
        "activation_rate": {
            _fmt(t): float(acc.above[i].sum()) / max(n, 1) for i, t in enumerate(acc.thresholds[:n_user])
        },
        "nan": int(acc.nan.sum()),
        "inf": int(acc.inf.sum()),
        "per_channel": {
            "mean": mean.tolist(),
            "std": (m2 / per_channel_n).sqrt().tolist(),
            "min": cmin.tolist(),
            "max": cmax.tolist(),
            "zero_fraction": (acc.zeros.cpu().to(torch.float64) / total).tolist(),
            "activation_rate": rates[:n_user].tolist(),
            "nan": acc.nan.cpu().tolist(),
            "inf": acc.inf.cpu().tolist(),
        },
    }
    if meta.get("bounds"):
        out["saturation"] = _saturation(acc, meta, n_user, n)
    return out


def _saturation(acc: Any, meta: dict[str, Any], n_user: int, n: int) -> dict[str, float]:
    """Fraction of values within 2% of the range at each end of a bounded activation."""
    above_low, above_high = (float(acc.above[n_user + i].sum()) for i in range(2))
    low_mass = (n - above_low) / max(n, 1)
    high_mass = above_high / max(n, 1)
    return {"low": low_mass, "high": high_mass, "total": low_mass + high_mass}


def _fmt(t: float) -> str:
    return f"{t:g}"
