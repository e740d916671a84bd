"""Parameter and buffer counts: total, trainable, per layer, bytes by dtype; shared (tied) counted once."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ._hooks import module_names


@dataclass
class LayerParameters:
    own: int  # parameters registered on this module itself (a shared one only on its first owner)
    own_trainable: int
    total: int  # own + every descendant's, each distinct parameter once


@dataclass
class SharedParameter:
    """One parameter reachable under several names (tied weights): counted once, under ``names[0]``."""

    names: list[str]
    numel: int


@dataclass
class ParameterReport:
    total: int
    trainable: int
    bytes: int
    bytes_by_dtype: dict[str, int]
    buffers: int  # elements
    buffer_bytes: int
    buffer_bytes_by_dtype: dict[str, int]
    by_layer: dict[str, LayerParameters] = field(default_factory=dict)
    shared: list[SharedParameter] = field(default_factory=list)

    @property
    def frozen(self) -> int:
        return self.total - self.trainable

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "frozen": self.frozen}


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def count_parameters(model: nn.Module) -> ParameterReport:
    names = module_names(model)
    # every (module, name) a parameter appears under; identity decides "the same parameter"
    owners: dict[int, list[str]] = defaultdict(list)
    params: dict[int, nn.Parameter] = {}
    for full, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)].append(full)
        params[id(p)] = p
    by_dtype: Counter[str] = Counter()
    for p in params.values():
        by_dtype[_dtype(p)] += _bytes(p)
    buffers = {id(b): b for b in model.buffers()}
    buf_by_dtype: Counter[str] = Counter()
    for b in buffers.values():
        buf_by_dtype[_dtype(b)] += _bytes(b)
    return ParameterReport(
        total=sum(p.numel() for p in params.values()),
        trainable=sum(p.numel() for p in params.values() if p.requires_grad),
        bytes=sum(by_dtype.values()), bytes_by_dtype=dict(by_dtype),
        buffers=sum(b.numel() for b in buffers.values()), buffer_bytes=sum(buf_by_dtype.values()),
        buffer_bytes_by_dtype=dict(buf_by_dtype),
        by_layer=_by_layer(model, names),
        shared=[SharedParameter(full, params[i].numel()) for i, full in owners.items() if len(full) > 1],
    )


def _by_layer(model: nn.Module, names: dict[int, str]) -> dict[str, LayerParameters]:
    seen: set[int] = set()
    out: dict[str, LayerParameters] = {}
    for name, m in model.named_modules():  # pre-order: a shared parameter goes to its first owner
        own = [p for p in m.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in own)
        total = sum(p.numel() for p in m.parameters())  # parameters() de-duplicates
        trainable = sum(p.numel() for p in own if p.requires_grad)
        out[name] = LayerParameters(sum(p.numel() for p in own), trainable, total)
    return out
