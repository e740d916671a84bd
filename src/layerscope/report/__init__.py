"""Reports: the result schema, and sinks that write a result (``SINKS``: name → fn(result, dir) → path)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io import atomic_write_json
from .._registry import Registry
from .result import SCHEMA_VERSION, LayerResult, ProbeResult

SINKS: Registry[Callable[[Any, Path], Path]] = Registry("report format")


@SINKS.register("json")
def write_json(result: ProbeResult, out_dir: Path) -> Path:
    return atomic_write_json(Path(out_dir) / "report.json", result.to_dict())


__all__ = ["SCHEMA_VERSION", "SINKS", "LayerResult", "ProbeResult", "write_json"]

from . import html as html  # noqa: E402  (registers the "html" sink)
