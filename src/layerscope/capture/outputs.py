"""Flattening a module's output into named floating-point tensors.

Tensors, tuples/lists, dicts and HF-style ``ModelOutput`` objects (mappings) are walked; each floating
tensor gets a suffix: ``""`` for a plain tensor, ``[0]`` for a sequence item, ``["hidden"]`` for a
mapping entry (nested: ``[0]["logits"]``). Integer, bool and complex tensors are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch


def iter_float_tensors(output: Any, suffix: str = "", depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(output, torch.Tensor):
        if output.is_floating_point():
            yield suffix, output
    elif depth > 8:  # deeply nested structures are not activations
        return
    elif isinstance(output, Mapping):
        for key, value in output.items():
            yield from iter_float_tensors(value, f'{suffix}["{key}"]', depth + 1)
    elif isinstance(output, (tuple, list)):
        for i, value in enumerate(output):
            yield from iter_float_tensors(value, f"{suffix}[{i}]", depth + 1)
