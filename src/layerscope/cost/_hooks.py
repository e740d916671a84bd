"""Forward hooks for one model, attached in ``__enter__`` and removed in ``__exit__`` (always).

They answer three questions while a model runs: which module is running now (to name the layer where a
forward pass failed, and to attribute saved activations), how often each module ran, and — when asked —
how long each module's forward took (inclusive of its children).

They are *global* module hooks (``register_module_forward_pre_hook``) filtered to this model's modules,
not hooks on each module: torch turns off fused fast paths (``TransformerEncoderLayer``) for a module with
its own hooks, so per-module hooks would change the kernels being measured.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.hooks import RemovableHandle


def module_names(model: nn.Module) -> dict[int, str]:
    """``id(module) -> name`` with the first path ``named_modules()`` gives (a shared module keeps one)."""
    return {id(m): name for name, m in model.named_modules()}


def display_name(name: str, model: nn.Module) -> str:
    return name or f"({type(model).__name__})"


class Clock:
    """Monotonic CPU clock, or CUDA events (asynchronous: read only after ``sync``)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.name = "cuda events" if self.cuda else "time.perf_counter_ns"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter_ns()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end)) if self.cuda else (end - start) / 1e6


class ModuleStack:
    """Which modules are running (innermost last), call counts and, with a clock, per-call intervals."""

    def __init__(self, names: dict[int, str], clock: Clock | None = None) -> None:
        """``names``: ``module_names(model)``, which also decides whose modules are followed."""
        self._names = names
        self._clock = clock
        self._handles: list[RemovableHandle] = []
        self.running: list[tuple[str, Any]] = []
        self.calls: Counter[str] = Counter()
        self._intervals: list[tuple[str, Any, Any]] = []

    def __enter__(self) -> ModuleStack:
        self._handles.append(register_module_forward_pre_hook(self._pre))
        self._handles.append(register_module_forward_hook(self._post))
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre(self, module: nn.Module, args: Any) -> None:
        name = self._names.get(id(module))
        if name is None:  # a module of another model (global hooks see every module)
            return
        self.calls[name] += 1
        self.running.append((name, self._clock.mark() if self._clock else None))

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if id(module) not in self._names or not self.running:
            return
        name, start = self.running.pop()
        if self._clock is not None:
            self._intervals.append((name, start, self._clock.mark()))

    def current(self) -> str | None:
        """The innermost running module; after an exception, the one where it was raised."""
        return self.running[-1][0] if self.running else None

    def take_layer_ms(self) -> dict[str, float]:
        """Forward time per module for the calls since the last take (summed over calls)."""
        assert self._clock is not None
        self._clock.sync()
        totals: dict[str, float] = defaultdict(float)
        for name, start, end in self._intervals:
            totals[name] += self._clock.elapsed_ms(start, end)
        self._intervals.clear()
        return dict(totals)
