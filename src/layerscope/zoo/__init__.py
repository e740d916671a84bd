"""Built-in demo models and data. Nothing here downloads anything.

``MODELS`` maps a name to a factory ``(**kwargs) -> nn.Module``; ``build(name)`` makes one.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._registry import Registry

MODELS: Registry[Any] = Registry("built-in model")
# Demos: name → () -> (trained model, (x_train, y_train, x_test, y_test), description of the data)
DEMOS: Registry[Any] = Registry("built-in demo")


def build(name: str, **kwargs: Any) -> nn.Module:
    return MODELS.get(name)(**kwargs)


def names() -> list[str]:
    return MODELS.names()


# Model files register themselves on import.
from . import baselines, digits, resnet, sequence  # noqa: E402,F401
