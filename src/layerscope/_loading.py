"""Loading a user's model from ``path/to/file.py:factory`` (or a built-in name), with errors that say
what to fix. Shared by the ``profile``, ``compare`` and ``analyze`` verbs."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from ._errors import ConfigError, ModelError


def _split(spec: str) -> tuple[Path, str]:
    path, sep, factory = spec.rpartition(":")  # rpartition: a Windows drive letter keeps its colon
    if not sep or not path or not factory.isidentifier():
        raise ConfigError(f"expected FILE.py:FACTORY (a Python file and the name of a function in it that "
                          f"returns an nn.Module), got {spec!r}")
    if not path.endswith(".py"):
        raise ConfigError(f"the model file must be a .py file, got {path!r} in {spec!r}")
    return Path(path), factory


def _import_file(path: Path) -> ModuleType:
    """Import ``path`` as a module of its own (its folder is on ``sys.path`` while it runs, so that it
    can import its neighbours)."""
    resolved = path.resolve()
    name = f"_layerscope_user_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up here
    sys.path.insert(0, str(resolved.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ModelError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(resolved.parent))
    return module


def load_model_factory(spec: str) -> nn.Module:
    """``"models/net.py:build"`` → ``build()`` from that file, checked to be an ``nn.Module``."""
    path, factory = _split(spec)
    if not path.is_file():
        raise ModelError(f"model file not found: {path} (from {spec!r})")
    module = _import_file(path)
    fn = getattr(module, factory, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ModelError(f"{path} defines no {factory!r}; callables defined there: "
                         f"{', '.join(found) or 'none'}")
    if not callable(fn):
        raise ModelError(f"{factory!r} in {path} is a {type(fn).__name__}, not a function")
    try:
        model = fn()
    except Exception as exc:
        raise ModelError(f"the factory {factory}() in {path} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"the factory {factory}() in {path} returned a {type(model).__name__}, not a "
                         f"torch.nn.Module")
    return model


def load_model(spec: str) -> tuple[str, nn.Module]:
    """A built-in model name (``layerscope.zoo``) or ``FILE.py:FACTORY`` → (display name, model)."""
    from . import zoo

    if ":" not in spec and not spec.endswith(".py"):
        if spec not in zoo.MODELS:
            raise ConfigError(f"unknown model {spec!r}: give a built-in name ({', '.join(zoo.names())}) or "
                              f"FILE.py:FACTORY")
        return spec, zoo.build(spec)
    path, factory = _split(spec)
    return f"{path.stem}:{factory}", load_model_factory(spec)
