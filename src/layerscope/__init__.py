"""layerscope: look inside every layer of a neural network while it runs, measure what it costs,
and act on what you see."""

from __future__ import annotations

from ._analyze import analyze
from ._errors import (
    ConfigError,
    DataError,
    LayerscopeError,
    LayerSelectionError,
    MissingDependencyError,
    ModelError,
)
from ._probe import Probe
from .cost import Comparison, ModelProfile, compare, profile
from .ops import linear_scan
from .report import LayerResult, ProbeResult

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "ConfigError",
    "DataError",
    "LayerResult",
    "LayerSelectionError",
    "LayerscopeError",
    "MissingDependencyError",
    "ModelError",
    "ModelProfile",
    "Probe",
    "ProbeResult",
    "__version__",
    "analyze",
    "compare",
    "linear_scan",
    "profile",
]
