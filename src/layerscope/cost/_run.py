"""Running a model for measurement: example inputs, backward seeds, and leaving the model as found."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError, ModelError
from ._hooks import ModuleStack, display_name

LossFn = Callable[[Any], torch.Tensor]


@dataclass
class Call:
    """The example inputs as positional and keyword arguments of ``model(...)``."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    @classmethod
    def of(cls, example_inputs: Any) -> Call:
        if isinstance(example_inputs, torch.Tensor):
            return cls((example_inputs,), {})
        if isinstance(example_inputs, Mapping):
            return cls((), dict(example_inputs))
        if isinstance(example_inputs, Sequence) and not isinstance(example_inputs, (str, bytes)):
            return cls(tuple(example_inputs), {})
        raise ConfigError(
            f"example_inputs must be a tensor, a tuple/list of positional arguments or a dict of keyword "
            f"arguments, not {type(example_inputs).__name__}")

    def to(self, device: torch.device) -> Call:
        def move(v: Any) -> Any:
            return v.to(device) if isinstance(v, torch.Tensor) else v

        return Call(tuple(move(a) for a in self.args), {k: move(v) for k, v in self.kwargs.items()})

    def tensors(self) -> list[torch.Tensor]:
        return tensors_in((self.args, self.kwargs))

    def describe(self) -> list[dict[str, Any]]:
        return [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                for t in self.tensors()]

    def __call__(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor in nested tuples/lists/dicts/dataclasses (a ``ModelOutput`` is a dict)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in tensors_in(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors_in(v)]
    if is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in fields(obj) for t in tensors_in(getattr(obj, f.name))]
    return []


def loss_of(output: Any, loss_fn: LossFn | None) -> Any:
    """What backward starts from: ``loss_fn(output)`` (part of the forward work) or the output itself."""
    return output if loss_fn is None else loss_fn(output)


def backward(seed: Any) -> bool:
    """Backward from a scalar loss, or from a gradient of ones on every output tensor that needs one.

    Returns False when nothing requires a gradient (frozen model, inference mode, a constant loss).
    """
    outs = [t for t in tensors_in(seed) if t.requires_grad and (t.is_floating_point() or t.is_complex())]
    if not outs:
        return False
    # Seed through a view: a gradient handed straight to an output does not fire that output's tensor
    # hooks, so ModuleTracker would not attribute the last module's backward to it.
    torch.autograd.backward([t.view_as(t) for t in outs], [torch.ones_like(t) for t in outs])
    return True


def first_forward(model: nn.Module, call: Call, stack: ModuleStack) -> Any:
    """``call(model)`` inside ``stack``; a failure becomes a ModelError that names the failing layer."""
    try:
        return call(model)
    except Exception as exc:
        layer = stack.current() or ""
        kind = type(dict(model.named_modules()).get(layer, model)).__name__
        shapes = ", ".join(f"{d['shape']} {d['dtype']}" for d in call.describe()) or "no tensors"
        raise ModelError(
            f"the model failed on the example input in layer {display_name(layer, model)!r} ({kind}): "
            f"{type(exc).__name__}: {exc} — the example input was {shapes}; check the input shape/dtype "
            f"(--input-shape on the command line) against what this layer expects") from exc


@contextlib.contextmanager
def preserved(model: nn.Module, devices: Sequence[torch.device] = ()) -> Iterator[None]:
    """Leave the model as found: train/eval flags, ``.grad`` of every parameter, buffers (BatchNorm
    running statistics), and the random-number state (dropout)."""
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    grads = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cuda = [d.index if d.index is not None else torch.cuda.current_device()
            for d in devices if d.type == "cuda"]
    try:
        with torch.random.fork_rng(devices=cuda):
            for p in params:
                p.grad = None
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, g in zip(params, grads, strict=False):
            p.grad = g
        with torch.no_grad():
            for b, saved in buffers:
                with torch.inference_mode(b.is_inference()):
                    b.copy_(saved)


def model_device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")
