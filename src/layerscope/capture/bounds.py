"""Output ranges of bounded activations, for the saturation health check."""

from __future__ import annotations

from torch import nn


def output_bounds(module: nn.Module) -> tuple[float, float] | None:
    """``(low, high)`` that the module's output cannot leave, or None when unbounded."""
    if isinstance(module, nn.Hardtanh):  # also ReLU6
        return float(module.min_val), float(module.max_val)
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid, nn.Softmax)):
        return 0.0, 1.0
    if isinstance(module, (nn.Tanh, nn.Softsign)):
        return -1.0, 1.0
    return None


def saturation_thresholds(bounds: tuple[float, float], margin: float = 0.02) -> tuple[float, float]:
    """Thresholds ``low + δ`` and ``high − δ`` with δ = margin × (high − low): values beyond them are
    "at the limit". Counting ``x > t`` for both gives the mass at each end in the same fused read."""
    low, high = bounds
    delta = margin * (high - low)
    return low + delta, high - delta
