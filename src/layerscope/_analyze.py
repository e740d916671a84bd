"""``analyze``: one streaming pass of data through a model with a :class:`Probe` attached."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ._device import resolve_device
from ._errors import ConfigError, DataError, ModelError
from ._probe import DEFAULT_STATS, Probe
from .report.result import ProbeResult
from .stats import ACCUMULATORS

log = logging.getLogger(__name__)

Batches = torch.Tensor | tuple | list | Iterable[Any]

# Every statistic that a forward pass can gather ("impact" needs a backward pass: ``impact=True``).
ALL_STATS = ("moments", "coverage", "histogram", "spectrum", "spatial", "covariance", "connectivity")


def resolve_stats(stats: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"`` or names (a comma-separated string or a sequence) → checked accumulator names."""
    names = [s.strip() for s in stats.split(",")] if isinstance(stats, str) else list(stats)
    names = [n for n in names if n]
    if names == ["all"]:
        return ALL_STATS
    if "impact" in names:
        raise ConfigError("'impact' needs a backward pass: ask for it with impact=True (--impact), not in stats")
    for name in names:
        ACCUMULATORS.get(name)
    return tuple(names)


def _split_batches(data: Batches, batch_size: int) -> Iterable[Any]:
    """A tensor or an ``(inputs, labels)`` pair is cut into batches; anything else is iterated."""
    if isinstance(data, torch.Tensor):
        return data.split(batch_size)
    if isinstance(data, (tuple, list)) and data and isinstance(data[0], torch.Tensor) and len(data) <= 2 and (
        len(data) == 1 or (isinstance(data[1], torch.Tensor) and data[1].shape[:1] == data[0].shape[:1])
    ):
        return zip(*(t.split(batch_size) for t in data), strict=True)
    return data


def _inputs(batch: Any) -> Any:
    """The model input of one batch: the batch itself, or its first item for (x, y, …) batches."""
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    if isinstance(batch, dict):
        for key in ("x", "input", "inputs", "pixel_values", "input_ids"):
            if key in batch:
                return batch[key]
    return batch


def _to(x: Any, device: torch.device | None) -> Any:
    return x.to(device) if device is not None and isinstance(x, torch.Tensor) else x


@contextmanager
def eval_mode(model: nn.Module):
    """Put every module in eval mode and restore each one's own mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


def _describe(x: Any) -> str:
    return f"input of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"input of type {type(x).__name__}"


def run_pass(model: nn.Module, probe: Probe, data: Batches, *, batch_size: int, batches: int | None,
             device: torch.device | None, progress: Any = None) -> int:
    """Forward every batch through ``model`` under ``probe``; returns the number of batches seen."""
    seen = 0
    with torch.inference_mode(), probe:
        for batch in _split_batches(data, batch_size):
            if batches is not None and seen >= batches:
                break
            x = _to(_inputs(batch), device)
            try:
                model(x)
            except Exception as exc:
                where = f" in layer {probe.failed_layer!r}" if probe.failed_layer else ""
                raise ModelError(
                    f"the forward pass failed{where} on batch {seen} ({_describe(x)}): {exc}. "
                    "Check that the data matches the input the model expects."
                ) from exc
            seen += 1
            if progress is not None:
                progress(1)
    return seen


def analyze(
    model: nn.Module,
    data: Batches,
    *,
    batch_size: int = 64,
    batches: int | None = None,
    layers: str | Sequence[str] | None = "*",
    stats: str | Sequence[str] = DEFAULT_STATS,
    reference_data: Batches | None = None,
    impact: bool = False,
    device: str | torch.device | None = None,
    progress: Any = None,
    config: dict[str, Any] | None = None,
    **probe_options: Any,
) -> ProbeResult:
    """Stream ``data`` through ``model`` and return the analysed statistics of every selected layer.

    ``data`` is a tensor of inputs, an ``(inputs, labels)`` pair of tensors (both cut into batches of
    ``batch_size``) or any iterable of batches (a ``DataLoader``; a batch is a tensor or ``(x, y, …)``).
    With ``reference_data`` (e.g. the training split) a profiling pass first records each neuron's
    range, which enables the KMNC, NBC and SNAC coverage criteria on ``data``. Interrupting the pass
    (Ctrl-C) returns the statistics gathered so far, marked ``partial``. ``stats="all"`` gathers every
    forward statistic; ``impact=True`` adds a forward+backward pass for the Taylor impact (ζ) scores
    (the loss is cross-entropy when the data has labels, else the output norm).
    """
    stats = resolve_stats(stats)
    if batches is not None and batches < 1:
        raise ConfigError(f"batches must be at least 1 (got {batches}); leave it unset to use all the data")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1 (got {batch_size})")
    dev = resolve_device(device)
    if dev is not None:
        model.to(dev)
    cfg = {"batch_size": batch_size, "batches_limit": batches, "device": str(dev or _model_device(model)),
           **(config or {})}
    reference = None
    with eval_mode(model):
        if reference_data is not None and "coverage" in stats:
            ref_probe = Probe(model, layers, ("coverage",), **probe_options)
            n_ref = run_pass(model, ref_probe, reference_data, batch_size=batch_size, batches=None, device=dev)
            if n_ref == 0:
                raise DataError("the reference data holds no batches")
            reference = ref_probe.result(config={"role": "reference"})
            cfg["reference_batches"] = n_ref
        probe = Probe(model, layers, stats, reference=reference, **probe_options)
        try:
            seen = run_pass(model, probe, data, batch_size=batch_size, batches=batches, device=dev,
                            progress=progress)
        except KeyboardInterrupt:
            log.warning("interrupted after %d batches: the result is partial", probe.batches)
            return probe.result(partial=True, config=cfg)
    if seen == 0:
        raise DataError("the data holds no batches: nothing was analysed")
    result = probe.result(config=cfg)
    if impact:
        from ._impact import attach_impact, impact_pass

        zeta = impact_pass(model, data, batch_size=batch_size, batches=batches, layers=layers, device=dev,
                           **probe_options)
        result = attach_impact(result, zeta)
    return result


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
