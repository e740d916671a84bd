"""Wall-clock time of forward and backward, whole model and per layer.

CPU: ``time.perf_counter_ns`` (monotonic). CUDA: events around each phase, read after one
``torch.cuda.synchronize``. Warm-up runs are discarded; the repeats give median, IQR and mean ± std.
Whole-model times come from runs *without* hooks; per-layer forward times from separate runs with hooks
(their overhead is inside the per-layer numbers, not in the totals).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ._hooks import Clock, ModuleStack, module_names
from ._run import Call, LossFn, backward, loss_of
from ._stats import Summary, summarize

Progress = Callable[[str, int, int], None]


@dataclass
class TimingReport:
    device: str
    clock: str
    warmup: int
    repeats: int
    threads: int  # torch.get_num_threads() during the runs
    interop_threads: int
    forward_ms: Summary
    backward_ms: Summary | None  # None: no backward (inference mode, nothing requires grad)
    step_ms: Summary
    layer_forward_ms: dict[str, float] = field(default_factory=dict)  # median per layer, inclusive

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("forward_ms", "backward_ms", "step_ms"):
            d[k] = d[k].to_dict() if d[k] is not None else None
        return d


def measure_step(model: nn.Module, call: Call, clock: Clock, *, with_backward: bool,
                 loss_fn: LossFn | None) -> tuple[float, float | None]:
    """One timed step: (forward ms — with ``loss_fn`` when given —, backward ms or None). Gradients are
    dropped afterwards, untimed."""
    start = clock.mark()
    out = loss_of(call(model), loss_fn)
    middle = clock.mark()
    ran = backward(out) if with_backward else False
    end = clock.mark()
    clock.sync()
    fwd = clock.elapsed_ms(start, middle)
    bwd = clock.elapsed_ms(middle, end) if ran else None
    del out
    for p in model.parameters():
        p.grad = None
    return fwd, bwd


def time_model(model: nn.Module, call: Call, device: torch.device, *, warmup: int, repeats: int,
               with_backward: bool, loss_fn: LossFn | None, layer_times: bool,
               progress: Progress | None = None) -> TimingReport:
    clock = Clock(device)
    total = warmup + repeats * (2 if layer_times else 1)
    fwd: list[float] = []
    bwd: list[float] = []
    for i in range(warmup + repeats):
        f, b = measure_step(model, call, clock, with_backward=with_backward, loss_fn=loss_fn)
        if i >= warmup:
            fwd.append(f)
            if b is not None:
                bwd.append(b)
        if progress:
            progress("timing", i + 1, total)
    layers = (_layer_times(model, call, clock, repeats, progress, warmup + repeats, total)
              if layer_times else {})
    steps = [f + b for f, b in zip(fwd, bwd, strict=False)] if bwd else fwd
    return TimingReport(str(device), clock.name, warmup, repeats, torch.get_num_threads(),
                        torch.get_num_interop_threads(), summarize(fwd), summarize(bwd) if bwd else None,
                        summarize(steps), layers)


def _layer_times(model: nn.Module, call: Call, clock: Clock, repeats: int, progress: Progress | None,
                 done: int, total: int) -> dict[str, float]:
    per_layer: dict[str, list[float]] = defaultdict(list)
    with ModuleStack(module_names(model), clock) as stack:
        for i in range(repeats):
            out = call(model)
            del out
            for name, ms in stack.take_layer_ms().items():
                per_layer[name].append(ms)
            if progress:
                progress("timing", done + i + 1, total)
    return {name: float(np.median(v)) for name, v in per_layer.items()}
