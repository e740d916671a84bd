"""``Probe``: the user's handle. Owns the hooks and the per-layer accumulators of one streaming pass.

    with layerscope.Probe(model, layers="*") as probe:
        for x, _ in loader:
            model(x)
    result = probe.result()

Hooks are removed in ``finally`` (also when the forward pass raises). A hook reduces each activation
once (``kernels.channel_reduce``: a fused per-channel reduction shared by every accumulator of the
layer), lets the accumulators read the view, and returns: no reference to the activation survives it.
For a layer whose statistics are the default ones with native CPU state, the reduction and their
updates are one native call from the second batch of a shape on (``stats/_direct.py``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import operator
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import analysis as _analysis
from . import stats as _stats
from ._errors import ConfigError
from .capture import Layout, LayoutView, infer_layout, iter_float_tensors, make_view, select_modules
from .capture.bounds import output_bounds, saturation_thresholds
from .capture.layout import view_geometry
from .kernels import channel_reducer, select_backend
from .report.result import LayerResult, ProbeResult
from .stats._direct import plan_direct
from .stats._joint import plan_joint
from .stats._planned import batch_key

DEFAULT_STATS = ("moments", "coverage", "histogram")
_UNCHANGED = contextlib.nullcontext()  # stateless: one instance serves every hook


@contextlib.contextmanager
def _outside_inference_mode() -> Iterator[None]:
    """Out of inference mode, autograd still off: leaving inference mode alone turns grad mode back on."""
    with torch.inference_mode(False), torch.no_grad():
        yield


class _Plan:
    """What a layer's hook derives from its input's shape, dtype and device: made again only when one of
    them changes (``key``), so that a hook does not redo the view geometry and backend choice per batch."""

    __slots__ = ("axis", "channels_last", "key", "reduce", "shape", "spatial_shape", "view_shape")

    def __init__(self, tensor: torch.Tensor, layout: Layout, backend: str | None) -> None:
        self.key = (tensor.shape, tensor.dtype, tensor.device)  # strides need not match: views are reshapes
        self.shape = tuple(tensor.shape)
        self.view_shape, self.channels_last, self.axis, self.spatial_shape = view_geometry(self.shape, layout)
        self.reduce = channel_reducer(tensor.device, tensor.dtype, backend)  # (view, thresholds, grid)


@dataclass
class _Layer:
    """Everything the probe keeps for one captured tensor: O(channels × statistics)."""

    name: str
    module_type: str
    layout: Layout
    thresholds: tuple[float, ...]  # user thresholds, then the saturation thresholds (if bounded)
    bounds: tuple[float, float] | None
    accumulators: dict[str, Any]
    shape: tuple[int, ...] = ()
    calls: int = 0
    samples: int = 0
    backend: str = ""
    order: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # the joint native update of the spectrum, spatial and covariance accumulators (stats/_joint.py) for
    # one batch shape, the accumulators it leaves to their own update, the layer's accumulators when it was
    # planned, and the key it was last planned for
    joinable: bool = False  # at least two of spectrum, spatial, covariance: a joint update may be planned
    joint: Any = None
    others: tuple[Any, ...] = ()
    joined: tuple[Any, ...] = ()
    joint_tried: Any = ()
    plan: _Plan | None = None  # for the last input's shape, dtype and device
    # the reduction and updates of the default statistics in one native call (stats/_direct.py), for the
    # batch shape it was planned on; direct_ok: every accumulator is of a kind it takes
    direct: Any = None
    direct_ok: bool = False
    direct_tried: Any = ()

    @property
    def grad_accumulators(self) -> list[Any]:
        return [a for a in self.accumulators.values() if getattr(a, "needs_grad", False)]


def _fused_grid(layer: _Layer) -> tuple[int, int, int] | None:
    """The histogram grid the layer's reduction may count on in the same read (see ``kernels.channel_reduce``)."""
    hist = layer.accumulators.get("histogram")
    return None if hist is None else hist.fused_grid()


class Probe:
    """Stream statistics of the selected layers of ``model`` while the caller runs forward passes.

    Args:
        model: any ``nn.Module``.
        layers: glob patterns (comma-separated or a list), ``re:`` regexes, or exact names; default
            every leaf module. See :func:`layerscope.capture.select_modules`.
        stats: names of accumulators (``layerscope.stats.ACCUMULATORS``).
        types: also select modules of these classes / class names.
        exclude: patterns of modules to leave out.
        layouts: ``{pattern: "ncs:time" | "nsc:space" | Layout}`` overriding the inferred layout.
        thresholds: activation-rate thresholds (fraction of values > t per channel).
        backend: force a kernel backend (``"torch"``, ``"native"``, ``"triton"``), also for the
            accumulators' in-place state updates (``kernels.state_kernels``).
        reference: a :class:`ProbeResult` of a profiling pass whose neuron ranges enable KMNC, NBC
            and SNAC coverage.
        **options: passed to every accumulator (``coverage_thresholds``, ``top_k``,
            ``kmnc_sections``, ``bins`` …).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str] | None = "*",
        stats: Sequence[str] = DEFAULT_STATS,
        *,
        types: Sequence[type | str] = (),
        exclude: str | Sequence[str] | None = (),
        layouts: Mapping[str, str | Layout] | None = None,
        thresholds: Sequence[float] = (0.0,),
        backend: str | None = None,
        reference: ProbeResult | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Probe needs a torch.nn.Module, got {type(model).__name__}")
        for name in stats:
            _stats.ACCUMULATORS.get(name)  # unknown names fail here, before any hook exists
        self.model = model
        self.stats = tuple(stats)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.backend = backend
        self.options = options
        self.reference = reference
        self._layouts = {p: (Layout.parse(v) if isinstance(v, str) else v) for p, v in (layouts or {}).items()}
        self._modules = select_modules(model, layers, types, exclude)
        self._layers: dict[str, _Layer] = {}
        self._handles: list[Any] = []
        self._failed: str | None = None  # the failing module's name, once the with block has seen the error
        self._last_layout: dict[tuple[int, ...], Layout] = {}
        self._direct = True  # the one-call path of stats/_direct.py (off: every batch takes the general path)
        self.batches = 0

    # -- hooks -------------------------------------------------------------------------------
    def __enter__(self) -> Probe:
        self.attach()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.detach()
        if exc is not None:
            self._failed = self._module_of(exc)
            if self._failed and hasattr(exc, "add_note"):
                exc.add_note(f"layerscope: the forward pass failed in layer {self._failed!r}")

    def attach(self) -> None:
        if self._handles:
            return
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._on_model_start))
            for name, module in self._modules:
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()

    @property
    def failed_layer(self) -> str | None:
        """The innermost module that was running when a forward pass raised (None if none did): read from
        the exception's traceback, when the ``with`` block exits or inside an ``except`` clause."""
        if self._failed is None:
            exc = sys.exc_info()[1]
            return self._module_of(exc) if exc is not None else None
        return self._failed

    def _module_of(self, exc: BaseException) -> str | None:
        """The name of the innermost module of ``self.model`` whose code (``forward``, or the call that runs
        it and its hooks) is on the traceback of ``exc``: the frames whose ``self`` is one of them. Hooks
        on every module would know it without a traceback, at a Python call per module and batch."""
        names = {id(m): name or "<model>" for name, m in self.model.named_modules()}
        found, tb = None, exc.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, nn.Module) and id(owner) in names:
                found = names[id(owner)]
            tb = tb.tb_next
        return found

    def _on_model_start(self, module: nn.Module, args: Any) -> None:
        self._failed = None
        self.batches += 1

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            inputs = args if isinstance(args, tuple) else (args,)
            for suffix, tensor in iter_float_tensors(output):
                if any(tensor is a for a in inputs):  # identity / eval-mode dropout: not a new tensor
                    continue
                self._observe(name + suffix, module, tensor)

        return hook

    def _observe(self, name: str, module: nn.Module, tensor: torch.Tensor) -> None:
        layer = self._layers.get(name) or self._new_layer(name, module, tensor)
        direct = layer.direct
        if direct is not None and direct.run(tensor):  # the same state as below, in one native call
            layer.calls += 1
            layer.samples += direct.samples
            return
        plan = layer.plan
        if plan is None or plan.key != (tensor.shape, tensor.dtype, tensor.device):
            plan = layer.plan = _Plan(tensor, layer.layout, self.backend)
        # make_view(tensor.detach(), layer.layout), its geometry taken from the plan
        view = LayoutView(tensor.detach().reshape(plan.view_shape), plan.channels_last, plan.axis,
                          plan.spatial_shape)
        # Grad and inference mode are switched only where they would change something: each switch costs
        # a few µs per layer. State made under inference_mode would be inference tensors, which a later
        # batch run outside it (a training step, a no_grad pass) could not update in place.
        with torch.no_grad() if torch.is_grad_enabled() else _UNCHANGED:
            reduced = plan.reduce(view, layer.thresholds, _fused_grid(layer))
            joined = self._run_joint(layer, view, reduced)
            with _outside_inference_mode() if torch.is_inference_mode_enabled() else _UNCHANGED:
                for acc in layer.others if joined else layer.accumulators.values():
                    acc.update(view, reduced)
            if not joined and layer.joinable:
                self._plan_joint(layer, view)
        if layer.direct_ok and self._direct:
            self._plan_direct(layer, tensor, view)
        if tensor.requires_grad and layer.grad_accumulators:
            # Gradient statistics (e.g. Taylor impact a·∂L/∂a) need this batch's activation when its
            # gradient arrives; the tensor hook holds it only until then (one batch, one backward).
            tensor.register_hook(self._make_grad_hook(layer, view))
        layer.calls += 1
        layer.samples += plan.view_shape[0]
        layer.shape = plan.shape[1:]
        self._last_layout[plan.shape] = layer.layout

    @staticmethod
    def _run_joint(layer: _Layer, view: Any, reduced: Any) -> bool:
        """Whether the layer's joint update (planned for the accumulators it held then) took this batch."""
        joint = layer.joint
        return (joint is not None and len(layer.joined) == len(layer.accumulators)
                and all(map(operator.is_, layer.joined, layer.accumulators.values())) and joint.run(view, reduced))

    @staticmethod
    def _plan_joint(layer: _Layer, view: Any) -> None:
        """After a batch that did not take the layer's joint update: plan it again for this batch's shape
        (once per shape while it cannot be built; see stats/_joint.py)."""
        key = (*batch_key(view), view.data.device)
        if layer.joint is None and key == layer.joint_tried:
            return
        layer.joint_tried, layer.joint = key, plan_joint(layer.accumulators, view)
        joined = () if layer.joint is None else (layer.joint.spectrum, layer.joint.spatial, layer.joint.covariance)
        layer.joined = tuple(layer.accumulators.values())
        layer.others = tuple(a for a in layer.joined if not any(a is j for j in joined))

    def _plan_direct(self, layer: _Layer, tensor: torch.Tensor, view: Any) -> None:
        """After a batch of the general path: plan the layer's direct update for this batch's geometry (again
        when a plan existed, whose state has since been replaced; once per geometry while none can be made)."""
        key = (tensor.shape, tensor.stride(), tensor.dtype, tensor.device)
        if layer.direct is None and key == layer.direct_tried:
            return
        layer.direct_tried = key
        layer.direct = plan_direct(layer.accumulators, tensor, view, layer.thresholds, self.backend)

    @staticmethod
    def _make_grad_hook(layer: _Layer, view: Any):
        def on_grad(grad: torch.Tensor) -> None:
            grad_view = make_view(grad.detach(), layer.layout)
            with torch.no_grad():
                for acc in layer.grad_accumulators:
                    acc.update_grad(view, grad_view)

        return on_grad

    def _new_layer(self, name: str, module: nn.Module, tensor: torch.Tensor) -> _Layer:
        layout = self._override(name) or infer_layout(module, tensor, self._last_layout.get(tuple(tensor.shape)))
        bounds = output_bounds(module)
        thresholds = self.thresholds + (saturation_thresholds(bounds) if bounds else ())
        accumulators = {}
        weight = getattr(module, "weight", None)
        weight = weight.detach() if isinstance(weight, torch.Tensor) and weight.dim() >= 2 else None
        for stat in self.stats:
            options = dict(self.options, thresholds=thresholds, weight=weight, backend=self.backend,
                           **self._reference_options(name, stat))
            accumulators[stat] = _stats.ACCUMULATORS.get(stat)(**options)
        backend, _ = select_backend(tensor.device, tensor.dtype, self.backend)
        layer = _Layer(name, type(module).__name__, layout, thresholds, bounds, accumulators,
                       backend=backend.name, order=len(self._layers),
                       joinable=len({"spectrum", "spatial", "covariance"} & set(accumulators)) >= 2,
                       direct_ok=bool(accumulators) and set(accumulators) <= set(DEFAULT_STATS))
        self._layers[name] = layer
        return layer

    def _override(self, name: str) -> Layout | None:
        for pattern, layout in self._layouts.items():
            if fnmatch.fnmatchcase(name, pattern):
                return layout
        return None

    def _reference_options(self, name: str, stat: str) -> dict[str, Any]:
        if self.reference is None or stat != "coverage":
            return {}
        layer = self.reference.layers.get(name)
        cov = (layer.stats.get("coverage") if layer else None) or {}
        if "neuron_low" not in cov:
            return {}
        return {"ranges": (cov["neuron_low"], cov["neuron_high"])}  # lists; None where never observed

    # -- results -----------------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        return list(self._layers)

    def result(self, *, partial: bool = False, config: dict[str, Any] | None = None) -> ProbeResult:
        """Run every analysis over the accumulated state (the model is not needed any more)."""
        layers = {}
        for layer in self._layers.values():
            meta = self._meta(layer)
            stats = {
                stat: _analysis.LAYER_ANALYSES.get(stat)(acc, meta)
                for stat, acc in layer.accumulators.items()
                if stat in _analysis.LAYER_ANALYSES
            }
            layers[layer.name] = LayerResult(meta=meta, stats=stats)
        model_level = {name: fn(layers) for name, fn in _analysis.model_analyses()}
        cfg = {"layers_selected": [n for n, _ in self._modules], "stats": list(self.stats),
               "thresholds": list(self.thresholds), "batches": self.batches, **(config or {})}
        return ProbeResult(config=cfg, layers=layers, model=model_level, partial=partial)

    def _meta(self, layer: _Layer) -> dict[str, Any]:
        return {
            "name": layer.name,
            "module_type": layer.module_type,
            "shape": list(layer.shape),
            "channels_last": layer.layout.channel_dim == -1,
            "axis": layer.layout.axis.value,
            "calls": layer.calls,
            "samples": layer.samples,
            "order": layer.order,
            "backend": layer.backend,
            "thresholds": list(self.thresholds),
            "saturation_thresholds": list(layer.thresholds[len(self.thresholds):]),
            "bounds": list(layer.bounds) if layer.bounds else None,
        }

    # -- state (for merging runs and ranks) ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {name: {stat: acc.state_dict() for stat, acc in layer.accumulators.items()}
                for name, layer in self._layers.items()}
