"""Pure functions from accumulator state to results. Nothing here sees a hook, a model or a loader.

``LAYER_ANALYSES`` maps a statistic's name (the accumulator's registry name) to a function
``(accumulator, meta: dict) -> dict`` of JSON-ready values for one layer. ``MODEL_ANALYSES`` maps a
name to a function ``(layers: dict[str, dict]) -> dict`` over every layer's results (health across
depth, model-level coverage …).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._registry import Registry

LayerAnalysis = Callable[[Any, dict[str, Any]], dict[str, Any]]
ModelAnalysis = Callable[[dict[str, dict[str, Any]]], dict[str, Any]]

LAYER_ANALYSES: Registry[LayerAnalysis] = Registry("layer analysis")
MODEL_ANALYSES: Registry[ModelAnalysis] = Registry("model analysis")


def model_analyses() -> list[tuple[str, ModelAnalysis]]:
    return [(name, MODEL_ANALYSES.get(name)) for name in MODEL_ANALYSES]


# Analysis files register themselves on import (the order of MODEL_ANALYSES does not matter:
# each reads only the per-layer results).
from . import coverage, crossmodal, health, histogram, spatial, summary, temporal  # noqa: E402,F401
