"""Exception types. Every message says what was wrong, where, and what to do."""

from __future__ import annotations


class LayerscopeError(Exception):
    """Base class of every error layerscope raises on purpose. The CLI prints it and exits 2."""


class ConfigError(LayerscopeError, ValueError):
    """An option or argument has a value layerscope cannot use."""


class LayerSelectionError(ConfigError):
    """A layer pattern matched no module of the model."""


class ModelError(LayerscopeError):
    """The model could not be loaded, built, or run."""


class DataError(LayerscopeError):
    """The data could not be read, is empty, or does not fit the model."""


class MissingDependencyError(LayerscopeError, ImportError):
    """An optional dependency is needed for the requested feature."""
