"""One guard for optional heavy dependencies: ``has(name)`` and ``require(name)``."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from ._errors import MissingDependencyError

_HINTS = {
    "triton": "pip install triton  (CUDA machines only)",
    "matplotlib": "pip install 'layerscope[plots]'",
    "torch_pruning": "pip install torch-pruning",
    "keras": "pip install keras",
    "tensorboard": "pip install tensorboard",
    "pandas": "pip install pandas",
    "playwright": "pip install 'layerscope[browser]'",
    "psutil": "pip install psutil",
}


def has(name: str) -> bool:
    """True when ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(name: str, feature: str = "") -> ModuleType:
    """Import ``name`` or raise an error that says how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        hint = _HINTS.get(name, f"pip install {name}")
        what = f" for {feature}" if feature else ""
        raise MissingDependencyError(f"{name} is needed{what} but is not installed: {hint}") from exc
