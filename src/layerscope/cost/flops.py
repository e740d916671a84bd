"""FLOPs per module, forward and backward measured, on ``torch.utils.flop_counter.FlopCounterMode``.

``FlopCounterMode`` (with the corrected and completed formulas of ``_formulas``/``_elementwise`` passed as
its ``custom_mapping``) does the counting and the module attribution (its ``ModuleTracker`` follows the
module hierarchy in forward *and* backward). A second dispatch mode just below it records every op that
reaches the counter, so that an op with no formula is listed with its call count instead of adding a
silent 0. Backward = (counts after backward) − (counts after forward), per module and per op.
"""

from __future__ import annotations

import copy
import functools
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn
from torch.autograd.graph import register_multi_grad_hook
from torch.nn.modules.module import register_module_forward_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.module_tracker import ModuleTracker

from ._formulas import build_mapping, op_category
from ._hooks import module_names
from ._run import LossFn, tensors_in
from .conventions import CountingRules


@dataclass
class OpCount:
    op: str  # e.g. "aten.addmm"
    category: str  # matmul · elementwise · data (0 by definition) · uncounted (no formula)
    calls_forward: int
    calls_backward: int
    forward: int  # units of the convention; 0 for data and uncounted ops
    backward: int


@dataclass
class ModuleFlops:
    forward: int  # inclusive of the module's children
    backward: int | None
    uncounted_calls: int  # calls of ops with no formula inside this module (forward + backward)


@dataclass
class FlopReport:
    convention: str
    unit: str
    include_bias: bool
    include_elementwise: bool
    causal_halving: bool
    forward: int
    backward: int | None  # None: no backward was run
    by_module: dict[str, ModuleFlops] = field(default_factory=dict)
    ops: list[OpCount] = field(default_factory=list)
    formula_errors: dict[str, str] = field(default_factory=dict)  # op -> error (counted as uncounted)

    @property
    def uncounted(self) -> dict[str, int]:
        """Ops that had no formula: ``op -> calls`` (forward + backward). Never silently 0."""
        return {o.op: o.calls_forward + o.calls_backward for o in self.ops if o.category == "uncounted"}

    def by_category(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for o in self.ops:
            out[o.category] += o.forward + o.backward
        return dict(out)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["uncounted"] = self.uncounted
        return d


class _OpRecorder(TorchDispatchMode):
    """Sits just below ``FlopCounterMode``: sees exactly the ops it executes, in the same module context."""

    def __init__(self, counter: FlopCounterMode) -> None:
        super().__init__()
        self._counter = counter
        self.calls: dict[str, Counter[Any]] = defaultdict(Counter)  # module fqn -> packet -> calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        for parent in self._counter.mod_tracker.parents:
            self.calls[parent][packet] += 1
        return func(*args, **(kwargs or {}))


def _guarded(packet: Any, formula: Any, errors: dict[str, str]) -> Any:
    """A formula that raises (an op signature this torch version changed) is reported, not fatal."""

    @functools.wraps(formula)
    def f(*args: Any, **kwargs: Any) -> int:
        try:
            return formula(*args, **kwargs)
        except Exception as exc:
            errors[str(packet)] = f"{type(exc).__name__}: {exc}"
            return 0

    f._get_raw = getattr(formula, "_get_raw", False)  # type: ignore[attr-defined]
    return f


class _BackwardScopes:
    """Closes two module scopes that ``ModuleTracker`` leaves open during backward (all later backward ops
    would be attributed to them too):

    - a module whose inputs need no gradient (a stem, an embedding): the tracker leaves it when its input
      gradients are ready, which never happens — we leave it when its parameters' gradients are ready;
    - a module that returns its input unchanged (``Identity``): the tracker's "leave" hook on the input
      fires before its "enter" hook on the same tensor — ours, registered later, fires after both.

    Installed as a global forward hook *after* the tracker's, so its tensor hooks run after the tracker's.
    """

    def __init__(self, tracker: ModuleTracker, model: nn.Module) -> None:
        self._tracker = tracker
        root = type(model).__name__
        self._fqns: dict[int, set[str]] = defaultdict(set)  # every name the tracker may use for a module
        for path, m in model.named_modules(remove_duplicate=False):
            self._fqns[id(m)].add(f"{root}.{path}" if path else root)
        self._handles: list[Any] = []

    def __enter__(self) -> _BackwardScopes:
        self._handles.append(register_module_forward_hook(self._post))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        names = self._fqns.get(id(module))
        outs = [t for t in tensors_in(output) if t.requires_grad]
        if not names or not outs:
            return
        ins = [t for t in tensors_in(args) if t.requires_grad]
        leave = functools.partial(self._leave, names)
        if not ins:
            params = [p for p in module.parameters() if p.requires_grad]
            if params:
                self._handles.append(register_multi_grad_hook(params, leave))
        else:
            same = [o for o in outs if any(o is i for i in ins)]
            if same:
                self._handles.append(register_multi_grad_hook(same, leave))

    def _leave(self, names: set[str], *grads: Any) -> None:
        self._tracker.parents -= names


class FlopCounter:
    """``with FlopCounter(model, rules) as c: out = model(x); c.forward_done(); <backward>``."""

    def __init__(self, model: nn.Module, rules: CountingRules) -> None:
        self.model, self.rules = model, rules
        self.errors: dict[str, str] = {}
        mapping = {k: _guarded(k, f, self.errors) for k, f in build_mapping(rules).items()}
        self.mode = FlopCounterMode(display=False, custom_mapping=mapping)
        self.recorder = _OpRecorder(self.mode)
        self._stack = ExitStack()
        self._forward: tuple[dict[str, dict[Any, int]], dict[str, Counter[Any]]] | None = None

    def __enter__(self) -> FlopCounter:
        self._stack.enter_context(self.recorder)  # entered first = below the counter on the mode stack
        self._stack.enter_context(self.mode)
        self._stack.enter_context(_BackwardScopes(self.mode.mod_tracker, self.model))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)

    def forward_done(self) -> None:
        self._forward = (self.mode.get_flop_counts(), copy.deepcopy(dict(self.recorder.calls)))

    def report(self, ran_backward: bool) -> FlopReport:
        total_flops, total_calls = self.mode.get_flop_counts(), self.recorder.calls
        fwd_flops, fwd_calls = self._forward if self._forward is not None else (total_flops, total_calls)
        root = type(self.model).__name__
        aliases = _tracker_aliases(self.model, root)
        by_module: dict[str, ModuleFlops] = {}
        for fqn in sorted(set(total_calls) | set(total_flops)):
            name = aliases.get(fqn, "Global" if fqn == "Global" else f"<not a submodule> {fqn}")
            if fqn == "Global":
                continue
            f_fwd = sum(fwd_flops.get(fqn, {}).values())
            f_all = sum(total_flops.get(fqn, {}).values())
            unc = sum(c for p, c in total_calls.get(fqn, {}).items() if self._category(p) == "uncounted")
            by_module[name] = ModuleFlops(f_fwd, f_all - f_fwd if ran_backward else None, unc)
        ops = self._ops(fwd_flops.get("Global", {}), total_flops.get("Global", {}),
                        fwd_calls.get("Global", Counter()), total_calls.get("Global", Counter()))
        forward = sum(o.forward for o in ops)
        r = self.rules
        return FlopReport(r.convention.name, r.convention.unit, r.include_bias, r.include_elementwise,
                          r.causal_halving, forward, sum(o.backward for o in ops) if ran_backward else None,
                          by_module, ops, dict(self.errors))

    def _category(self, packet: Any) -> str:
        return "uncounted" if str(packet) in self.errors else op_category(packet)

    def _ops(self, f_fwd: dict[Any, int], f_all: dict[Any, int], c_fwd: Counter[Any],
             c_all: Counter[Any]) -> list[OpCount]:
        ops = []
        for packet in set(c_all) | set(f_all):
            cf, ca = c_fwd.get(packet, 0), c_all.get(packet, 0)
            ff, fa = f_fwd.get(packet, 0), f_all.get(packet, 0)
            ops.append(OpCount(str(packet), self._category(packet), cf, ca - cf, ff, fa - ff))
        return sorted(ops, key=lambda o: (-(o.forward + o.backward), o.category, o.op))


def _tracker_aliases(model: nn.Module, root: str) -> dict[str, str]:
    """``ModuleTracker`` names modules ``Root.a.b`` by whichever path it walked; map every path of a
    module to its one name from ``named_modules()`` ('' for the root)."""
    canonical = module_names(model)
    return {(f"{root}.{path}" if path else root): canonical[id(m)]
            for path, m in model.named_modules(remove_duplicate=False)}


def count_flops(model: nn.Module, example_inputs: Any, *, convention: str = "flops",
                include_bias: bool = True, include_elementwise: bool = True, causal_halving: bool = False,
                backward: bool = True, loss_fn: LossFn | None = None, training: bool = True) -> FlopReport:
    """FLOPs of one forward (and backward) step: ``profile(..., repeats=0).flops``. Works on the meta
    device and under ``inference_mode``."""
    from .profile import profile

    return profile(model, example_inputs, convention=convention, include_bias=include_bias,
                   include_elementwise=include_elementwise, causal_halving=causal_halving, backward=backward,
                   loss_fn=loss_fn, training=training, repeats=0).flops
