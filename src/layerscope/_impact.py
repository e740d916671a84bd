"""The ζ pass: forward + backward per batch with a Probe collecting Taylor impact, and true ablation.

:func:`analyze` runs under ``torch.inference_mode``, where no gradient exists, so impact needs a pass
of its own:

    result = layerscope.analyze(model, (x, y))
    impact = impact_pass(model, (x, y))        # forward + backward per batch, eval mode
    result = attach_impact(result, impact)      # per-layer "impact" stats, model analyses re-run

The model is left as it was: every module's train/eval mode is restored, no parameter changes and no
``.grad`` is written (gradients are taken with ``torch.autograd.grad`` and dropped).

:func:`channel_ablation` measures what the Taylor estimate approximates: the change of the loss when a
channel is zeroed (a forward hook multiplies it by 0), one forward pass over the data per channel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import analysis as _analysis
from ._analyze import Batches, _inputs, _split_batches, _to, eval_mode
from ._device import resolve_device
from ._errors import ConfigError, DataError, ModelError
from ._probe import Probe
from .capture import infer_layout, iter_float_tensors
from .report.result import ProbeResult

# loss_fn(output, labels or None) -> per-sample losses [B], or a scalar that is their sum
LossFn = Callable[[Any, torch.Tensor | None], torch.Tensor]


def _first_float(output: Any) -> torch.Tensor:
    for _, tensor in iter_float_tensors(output):
        return tensor
    raise ModelError("the model's output holds no floating-point tensor: "
                     "pass loss_fn to say what to differentiate")


def default_loss(output: Any, target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample losses ``[B]`` (the driver sums them, so each sample's gradient is its own loss's).

    - integer labels ``[B, …]`` and logits ``[B, K, …]``: cross-entropy (classification; extra dims
      averaged within the sample);
    - float targets shaped like the output: squared error summed within the sample;
    - no labels: the L2 norm of each sample's output.
    """
    out = _first_float(output)
    if target is None:
        return torch.linalg.vector_norm(out.flatten(1) if out.dim() > 1 else out[:, None], dim=1)
    if not target.is_floating_point() and out.dim() == target.dim() + 1 and out.shape[0] == target.shape[0]:
        per_position = nn.functional.cross_entropy(out, target, reduction="none")  # (B, …)
        return per_position.flatten(1).mean(1) if target.dim() > 1 else per_position
    if target.is_floating_point() and target.shape == out.shape:
        return nn.functional.mse_loss(out, target, reduction="none").flatten(1).sum(1)
    raise ConfigError(
        f"cannot pick a loss for output {tuple(out.shape)} and labels {tuple(target.shape)} "
        f"({target.dtype}): pass loss_fn(output, labels) -> per-sample losses [B] (or their sum)"
    )


def _targets(batch: Any, device: torch.device | None) -> torch.Tensor | None:
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and isinstance(batch[1], torch.Tensor):
        return _to(batch[1], device)
    return None


def _iter_batches(data: Batches, batch_size: int, batches: int | None, device: torch.device | None):
    for seen, batch in enumerate(_split_batches(data, batch_size)):
        if batches is not None and seen >= batches:
            return
        x, y = _to(_inputs(batch), device), _targets(batch, device)
        yield seen, _normal(x), _normal(y)


def _normal(t: Any) -> Any:
    """A tensor made under ``torch.inference_mode`` cannot enter autograd: use a normal copy of it."""
    return t.clone() if isinstance(t, torch.Tensor) and t.is_inference() else t


def _grad_inputs(model: nn.Module, x: Any) -> tuple[Any, list[torch.Tensor]]:
    """The input to run and what to differentiate with respect to: a float input (a detached alias
    that requires grad, so that every layer downstream of the data gets a gradient, frozen or not) and
    the trainable parameters (for activations that do not depend on the input)."""
    inputs = [p for p in model.parameters() if p.requires_grad]
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        x = x.detach().requires_grad_(True)
        inputs.append(x)
    if not inputs:
        raise ModelError("no parameter requires grad and the input is not a float tensor: no activation has "
                         "a gradient, so Taylor impact cannot be computed (unfreeze a parameter)")
    return x, inputs


def impact_pass(
    model: nn.Module,
    data: Batches,
    *,
    loss_fn: LossFn | None = None,
    batch_size: int = 64,
    batches: int | None = None,
    layers: str | Sequence[str] | None = "*",
    device: str | torch.device | None = None,
    **probe_options: Any,
) -> ProbeResult:
    """Taylor impact (ζ) of every channel of the selected layers: one forward + backward per batch.

    ``data`` is what :func:`layerscope.analyze` takes; labels (the second item of a batch) select the
    loss (:func:`default_loss`, or ``loss_fn(output, labels)`` returning per-sample losses ``[B]`` or
    their sum; a *mean* over the batch would scale every impact by 1/B). The result holds the
    ``impact`` statistics only; :func:`attach_impact` merges them into a full analysis.
    """
    if batch_size < 1 or (batches is not None and batches < 1):
        raise ConfigError(f"batch_size and batches must be at least 1 (got {batch_size}, {batches})")
    loss_fn = loss_fn or default_loss
    dev = resolve_device(device)
    if dev is not None:
        model.to(dev)
    probe = Probe(model, layers, ("impact",), **probe_options)
    seen = 0
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad(), probe:
        for _, x, y in _iter_batches(data, batch_size, batches, dev):
            x, inputs = _grad_inputs(model, x)
            loss = loss_fn(model(x), y).sum()
            if not loss.requires_grad:
                raise ModelError("the loss does not depend on any parameter or input that requires grad")
            # fires the Probe's tensor hooks; the gradients are dropped, so no .grad is written
            torch.autograd.grad(loss, inputs, allow_unused=True)
            seen += 1
    if seen == 0:
        raise DataError("the data holds no batches: no impact was measured")
    return probe.result(config={"role": "impact", "batch_size": batch_size, "batches": seen,
                                "loss": getattr(loss_fn, "__name__", type(loss_fn).__name__)})


def attach_impact(result: ProbeResult, impact: ProbeResult) -> ProbeResult:
    """Copy each layer's ``impact`` stats into ``result`` and re-run the model-level analyses."""
    for name, layer in impact.layers.items():
        if name in result.layers and "impact" in layer.stats:
            result.layers[name].stats["impact"] = layer.stats["impact"]
    result.model = {name: fn(result.layers) for name, fn in _analysis.model_analyses()}
    result.config["impact"] = impact.config
    return result


@contextmanager
def _zero_channel(module: nn.Module, channel_dim: int | None, channel: int):
    """Within the block, ``module``'s output has ``channel`` multiplied by 0 (a forward hook)."""

    def hook(mod: nn.Module, args: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise ConfigError(f"channel ablation needs a tensor output, {type(mod).__name__} returned "
                              f"{type(output).__name__}")
        dim = channel_dim if channel_dim is not None else infer_layout(mod, output).channel_dim
        mask = torch.ones(output.shape[dim], dtype=output.dtype, device=output.device)
        mask[channel] = 0
        shape = [1] * output.dim()
        shape[dim] = -1
        return output * mask.reshape(shape)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _sample_losses(model: nn.Module, data: Batches, loss_fn: LossFn, batch_size: int,
                   batches: int | None, device: torch.device | None) -> tuple[torch.Tensor, int, bool]:
    """``(losses, samples, per_sample)``: float64 per-sample losses over the data, or per-batch sums
    when ``loss_fn`` returns one scalar per batch (``per_sample`` False)."""
    parts, samples = [], 0
    for _, x, y in _iter_batches(data, batch_size, batches, device):
        parts.append(loss_fn(model(x), y).detach().to(torch.float64).reshape(-1).cpu())
        samples += len(x)
    if not parts:
        raise DataError("the data holds no batches (a generator is used up after one pass: channel ablation "
                        "reads the data once per channel, so pass tensors, a list or a DataLoader)")
    per_sample = sum(p.numel() for p in parts) == samples and samples > len(parts)
    return (torch.cat(parts) if per_sample else torch.stack([p.sum() for p in parts])), samples, per_sample


@dataclass
class Ablation:
    """Loss change per zeroed channel (float64 arrays over the channels ablated).

    ``mean_delta[c]``: mean over samples of ℓ_n(channel c zeroed) − ℓ_n; ``mean_abs_delta[c]``: mean of
    its absolute value over samples (None when ``loss_fn`` gives one scalar per batch).
    """

    channels: list[int]
    mean_delta: np.ndarray
    mean_abs_delta: np.ndarray | None
    samples: int


def channel_ablation(
    model: nn.Module,
    data: Batches,
    layer: str,
    *,
    loss_fn: LossFn | None = None,
    channels: Sequence[int] | None = None,
    channel_dim: int | None = None,
    batch_size: int = 64,
    batches: int | None = None,
    device: str | torch.device | None = None,
) -> Ablation:
    """True ablation: the loss change when each channel of ``layer`` is zeroed, one pass per channel.

    ``channel_dim`` defaults to the layout layerscope infers for the module's output (dim 1 for
    ``[B, C, …]`` conv outputs, the last dim for Linear outputs). ``data`` must be re-iterable.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ConfigError(f"no module named {layer!r} in the model")
    loss_fn = loss_fn or default_loss
    dev = resolve_device(device)
    with eval_mode(model), torch.no_grad():
        base, n, per_sample = _sample_losses(model, data, loss_fn, batch_size, batches, dev)
        if channels is None:
            channels = range(_channel_count(model, modules[layer], data, batch_size, channel_dim, dev))
        means, abs_means = [], []
        for c in channels:
            with _zero_channel(modules[layer], channel_dim, c):
                delta = _sample_losses(model, data, loss_fn, batch_size, batches, dev)[0] - base
            means.append(float(delta.sum()) / n)
            abs_means.append(float(delta.abs().mean()))
    return Ablation(list(channels), np.asarray(means), np.asarray(abs_means) if per_sample else None, n)


def _channel_count(model: nn.Module, module: nn.Module, data: Batches, batch_size: int,
                   channel_dim: int | None, device: torch.device | None) -> int:
    """Run one batch to see how many channels ``module`` outputs."""
    seen: list[int] = []

    def hook(mod: nn.Module, args: Any, output: Any) -> None:
        dim = channel_dim if channel_dim is not None else infer_layout(mod, output).channel_dim
        seen.append(output.shape[dim])

    handle = module.register_forward_hook(hook)
    try:
        _, x, _ = next(_iter_batches(data, batch_size, 1, device))
        model(x)
    finally:
        handle.remove()
    if not seen:
        raise ConfigError("the ablated module did not run on the data")
    return seen[0]
