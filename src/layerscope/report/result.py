"""Result types: plain data with a versioned JSON schema, re-loadable without the model."""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import DataError

SCHEMA_VERSION = "1.0"


def to_jsonable(value: Any) -> Any:
    """Tensors/arrays → lists, numpy scalars → Python, NaN/±Inf → None (JSON has no such numbers)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


@dataclass
class LayerResult:
    meta: dict[str, Any]
    stats: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "stats": self.stats}


def environment() -> dict[str, Any]:
    from .. import __version__

    return {
        "layerscope": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
    }


@dataclass
class ProbeResult:
    """What one streaming pass found: per-layer statistics and model-level analyses."""

    config: dict[str, Any]
    layers: dict[str, LayerResult]
    model: dict[str, Any] = field(default_factory=dict)
    partial: bool = False
    environment: dict[str, Any] = field(default_factory=environment)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: str = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable({
            "schema_version": self.schema_version,
            "created": self.created,
            "partial": self.partial,
            "config": self.config,
            "environment": self.environment,
            "layers": {name: layer.to_dict() for name, layer in self.layers.items()},
            "model": self.model,
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        version = str(data.get("schema_version", ""))
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise DataError(
                f"report schema version {version or '(missing)'} is not supported (this layerscope reads "
                f"{SCHEMA_VERSION.split('.')[0]}.x); re-run the analysis with this version"
            )
        layers = {n: LayerResult(meta=d["meta"], stats=d["stats"]) for n, d in data["layers"].items()}
        return cls(config=data["config"], layers=layers, model=data.get("model", {}),
                   partial=bool(data.get("partial")), environment=data.get("environment", {}),
                   created=data.get("created", ""), schema_version=version)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ProbeResult:
        """Read ``report.json`` (or a directory that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "report.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"no report at {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read report {path}: {exc}") from None
        return cls.from_dict(data)

    def save(self, out_dir: str | os.PathLike[str], formats: tuple[str, ...] | None = None) -> list[Path]:
        """Write the report into ``out_dir`` (every registered sink by default: report.json, …)."""
        from . import SINKS

        out = Path(out_dir)
        return [SINKS.get(fmt)(self, out) for fmt in (formats or SINKS.names())]

    def summary(self) -> str:
        """The terminal summary as plain text."""
        from .terminal import render_text

        return render_text(self)

    def __repr__(self) -> str:
        flag = ", partial" if self.partial else ""
        return f"ProbeResult({len(self.layers)} layers{flag})"
