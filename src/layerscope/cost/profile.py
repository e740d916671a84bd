"""``layerscope.profile(model, example_inputs)``: parameters, FLOPs, time, memory and gradient flow.

One instrumented step (forward + backward) gives FLOPs, activation memory, RSS/CUDA peaks and gradient
flow at once; the timing repeats follow, without instrumentation. The model is left as it was found: mode,
gradients, buffers, RNG state, and no hook or dispatch mode remains (all are removed in ``finally``).
"""

from __future__ import annotations

import platform
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError, ModelError
from .._io import atomic_write_json, atomic_write_text
from . import _render
from ._format import jsonable
from ._hooks import ModuleStack, module_names
from ._run import Call, LossFn, backward, first_forward, loss_of, model_device, preserved
from .conventions import CountingRules
from .flops import FlopCounter, FlopReport
from .gradients import GradientReport, gradient_flow
from .memory import MemoryProbe, MemoryReport
from .parameters import ParameterReport, count_parameters
from .timing import Progress, TimingReport, time_model

SCHEMA = "layerscope.cost.profile/1"


@dataclass
class LayerProfile:
    name: str  # as in named_modules(); '' is the model itself
    type: str
    depth: int
    calls: int  # forward calls in the instrumented step
    parameters: int  # own (a tied parameter counts at its first owner)
    parameters_total: int  # with descendants
    tied: bool  # holds a parameter that is shared with another layer
    flops_forward: int  # inclusive of descendants, in the convention's unit
    flops_backward: int | None
    uncounted_calls: int  # ops with no FLOP formula inside this layer
    forward_ms: float | None  # median, inclusive
    activation_bytes: int  # saved for backward by this layer's own ops
    grad_norm: float | None = None
    grad_ratio: float | None = None
    grad_flag: str | None = None


@dataclass
class ModelProfile:
    model: str
    device: str
    inputs: list[dict[str, Any]]
    settings: dict[str, Any]
    environment: dict[str, Any]
    parameters: ParameterReport
    flops: FlopReport
    timing: TimingReport | None
    memory: MemoryReport | None
    gradients: GradientReport | None
    layers: list[LayerProfile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # what was not measured, and why

    def to_dict(self) -> dict[str, Any]:
        def part(r: Any) -> Any:
            return r.to_dict() if r is not None else None

        return jsonable({
            "schema": SCHEMA, "model": self.model, "device": self.device, "inputs": self.inputs,
            "settings": self.settings, "environment": self.environment,
            "parameters": self.parameters.to_dict(), "flops": self.flops.to_dict(),
            "timing": part(self.timing), "memory": part(self.memory), "gradients": part(self.gradients),
            "layers": [dict(layer.__dict__) for layer in self.layers], "skipped": self.skipped})  # type: ignore[return-value]

    def to_markdown(self, depth: int | None = None) -> str:
        return _render.profile_markdown(self, depth)

    def render(self, depth: int | None = 2) -> Any:
        """A rich renderable: summary, layers down to ``depth``, ops with no FLOP formula."""
        return _render.profile_renderable(self, depth)

    def __rich__(self) -> Any:
        return self.render()

    def save(self, out_dir: str | Path) -> list[Path]:
        """``profile.json`` and ``profile.md`` in ``out_dir``, each written atomically."""
        out = Path(out_dir)
        return [atomic_write_json(out / "profile.json", self.to_dict()),
                atomic_write_text(out / "profile.md", self.to_markdown() + "\n")]


def environment() -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "machine": platform.machine(), "threads": torch.get_num_threads(),
           "interop_threads": torch.get_num_interop_threads()}
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name()
    return env


def profile(model: nn.Module, example_inputs: Any, *, convention: str = "flops", include_bias: bool = True,
            include_elementwise: bool = True, causal_halving: bool = False, training: bool = True,
            backward: bool = True, loss_fn: LossFn | None = None, repeats: int = 10, warmup: int = 3,
            layer_times: bool = True, vanishing_factor: float = 1e-3, exploding_factor: float = 1e3,
            progress: Progress | None = None) -> ModelProfile:
    """Profile one step of ``model`` on ``example_inputs`` (a tensor, a tuple of arguments or a dict of
    keyword arguments, moved to the model's device).

    ``convention`` is ``"flops"`` (2 per multiply–accumulate) or ``"macs"``; ``include_bias`` and
    ``include_elementwise`` add bias adds and elementwise work; ``causal_halving`` counts fused causal
    attention at half. ``training`` sets train/eval mode for the step; ``backward=False`` (or running under
    ``torch.inference_mode()``/``no_grad``) profiles the forward only; ``loss_fn(output)`` is the loss to
    differentiate (default: a gradient of ones on every output). ``repeats=0`` skips timing. On the meta
    device only parameters, FLOPs and activation memory are measured.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if repeats < 0 or warmup < 0:
        raise ConfigError(f"repeats and warmup must be >= 0 (got repeats={repeats}, warmup={warmup})")
    rules = CountingRules.make(convention, include_bias=include_bias, include_elementwise=include_elementwise,
                               causal_halving=causal_halving)
    device = model_device(model)
    call = Call.of(example_inputs).to(device)
    settings = {"convention": convention, "include_bias": include_bias,
                "include_elementwise": include_elementwise,
                "causal_halving": causal_halving, "training": training, "backward": backward,
                "loss_fn": getattr(loss_fn, "__name__", repr(loss_fn)) if loss_fn else None,
                "repeats": repeats, "warmup": warmup, "layer_times": layer_times}
    params = count_parameters(model)
    skipped: dict[str, str] = {}
    with preserved(model, [device]):
        model.train(training)
        flops, memory, gradients, calls = _instrumented_step(
            model, call, rules, device, backward, loss_fn, skipped, vanishing_factor, exploding_factor,
            progress)
        timing = None
        if device.type == "meta":
            skipped["timing"] = "meta device: nothing executes"
        elif repeats == 0:
            skipped["timing"] = "repeats=0"
        else:
            timing = time_model(model, call, device, warmup=warmup, repeats=repeats,
                                with_backward=flops.backward is not None, loss_fn=loss_fn,
                                layer_times=layer_times, progress=progress)
    result = ModelProfile(type(model).__name__, str(device), call.describe(), settings, environment(), params,
                          flops, timing, memory, gradients, skipped=skipped)
    result.layers = _layers(model, result, calls)
    return result


def _instrumented_step(model: nn.Module, call: Call, rules: CountingRules, device: torch.device,
                       want_backward: bool, loss_fn: LossFn | None, skipped: dict[str, str],
                       vanishing_factor: float, exploding_factor: float, progress: Progress | None,
                       ) -> tuple[FlopReport, MemoryReport | None, GradientReport | None, dict[str, int]]:
    if progress:
        progress("flops", 0, 1)
    if not want_backward:
        skipped["backward"] = "backward=False"
    elif torch.is_inference_mode_enabled() or not torch.is_grad_enabled():
        skipped["backward"] = "gradients are disabled (inference_mode / no_grad)"
        want_backward = False
    exclude = [*model.parameters(), *call.tensors()]
    with ExitStack() as stack_:
        stack = stack_.enter_context(ModuleStack(module_names(model)))
        counter = stack_.enter_context(FlopCounter(model, rules))
        mem = stack_.enter_context(MemoryProbe(device, stack, exclude, track_activations=want_backward))
        out = first_forward(model, call, stack)
        if loss_fn is not None:
            try:
                out = loss_of(out, loss_fn)
            except Exception as exc:
                raise ModelError(f"loss_fn failed on the model's output: "
                                 f"{type(exc).__name__}: {exc}") from exc
        counter.forward_done()
        ran = False
        if want_backward:
            try:
                ran = backward(out)
            except Exception as exc:
                raise ModelError(f"the backward pass failed: {type(exc).__name__}: {exc}") from exc
            if not ran:
                skipped["backward"] = "no output requires a gradient (frozen model, or loss_fn returned none)"
        del out
    gradients = None
    if ran and device.type != "meta":
        gradients = gradient_flow(model, vanishing_factor=vanishing_factor, exploding_factor=exploding_factor)
    elif ran:
        skipped["gradients"] = "meta device: gradients have no values"
    for p in model.parameters():
        p.grad = None
    if progress:
        progress("flops", 1, 1)
    return counter.report(ran), mem.report, gradients, dict(stack.calls)


def _layers(model: nn.Module, p: ModelProfile, calls: dict[str, int]) -> list[LayerProfile]:
    tied = {name.rpartition(".")[0] for s in p.parameters.shared for name in s.names}
    layer_ms = p.timing.layer_forward_ms if p.timing else {}
    act = p.memory.activation_bytes_by_layer if p.memory else {}
    grads = {g.name: g for g in p.gradients.layers} if p.gradients else {}
    rows = []
    for name, m in model.named_modules():
        fl = p.flops.by_module.get(name)
        lp, g = p.parameters.by_layer[name], grads.get(name)
        rows.append(LayerProfile(
            name, type(m).__name__, name.count(".") + 1 if name else 0, calls.get(name, 0), lp.own, lp.total,
            name in tied, fl.forward if fl else 0,
            (fl.backward if fl else 0) if p.flops.backward is not None else None,
            fl.uncounted_calls if fl else 0, layer_ms.get(name), act.get(name, 0),
            g.grad_norm if g else None, g.ratio if g else None, g.flag if g else None))
    return rows
