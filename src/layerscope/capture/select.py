"""Choosing the modules to watch: glob / regex patterns on qualified names, and module types.

- A glob with a wildcard (``conv*``, ``layer1.*``, ``*``) selects *leaf* modules — the ones that
  produce a new tensor — whose qualified name matches.
- A name without wildcards (``layer1.0``) selects that module, container or not.
- ``re:PATTERN`` is a regular expression (``re.fullmatch``) over every module's qualified name.
- ``types`` selects modules by class or class name (``"Conv2d"``, ``nn.Linear``), containers included.
A pattern that matches nothing is an error that lists the available names.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

from torch import nn

from .._errors import LayerSelectionError


def split_patterns(layers: str | Sequence[str] | None) -> list[str]:
    if layers is None:
        return ["*"]
    items = layers.split(",") if isinstance(layers, str) else list(layers)
    return [p.strip() for p in items if p.strip()]


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def _matches(pattern: str, name: str, module: nn.Module) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    if any(ch in pattern for ch in "*?["):
        return _is_leaf(module) and fnmatch.fnmatchcase(name, pattern)
    return name == pattern


def _type_matches(module: nn.Module, types: Iterable[type | str]) -> bool:
    names = {t for t in types if isinstance(t, str)}
    classes = tuple(t for t in types if isinstance(t, type))
    return (classes and isinstance(module, classes)) or type(module).__name__ in names


def select_modules(
    model: nn.Module,
    layers: str | Sequence[str] | None = "*",
    types: Sequence[type | str] = (),
    exclude: str | Sequence[str] | None = (),
) -> list[tuple[str, nn.Module]]:
    """The ``(qualified name, module)`` pairs to hook, in registration order."""
    named = [(n, m) for n, m in model.named_modules() if n]
    if not named:  # a bare leaf module used as the model
        named = [(type(model).__name__, model)]
    patterns = split_patterns(layers) if layers or not types else []
    excluded = split_patterns(exclude) if exclude else []
    for pat in patterns:
        if pat.startswith("re:"):
            try:
                re.compile(pat[3:])
            except re.error as exc:
                raise LayerSelectionError(f"layer pattern {pat!r} is not a valid regular expression: {exc}") from None
        if not any(_matches(pat, n, m) for n, m in named):
            raise LayerSelectionError(
                f"layer pattern {pat!r} matches no module of {type(model).__name__}. "
                f"Available layers: {_listing(named)}"
            )
    chosen = [
        (n, m)
        for n, m in named
        if (any(_matches(p, n, m) for p in patterns) or (types and _type_matches(m, types)))
        and not any(_matches(p, n, m) or fnmatch.fnmatchcase(n, p) for p in excluded)
    ]
    if not chosen:
        raise LayerSelectionError(
            f"no layer of {type(model).__name__} is selected (layers={layers!r}, types={list(types)!r}, "
            f"exclude={exclude!r}). Available layers: {_listing(named)}"
        )
    return chosen


def _listing(named: list[tuple[str, nn.Module]], limit: int = 60) -> str:
    items = [f"{n} ({type(m).__name__})" for n, m in named]
    more = f", … and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
