"""``layerscope.compare(models, example_inputs)``: several models measured in one run.

Static costs (parameters, FLOPs, activation memory) come from one ``profile()`` of each model. Time is
measured in rounds A B C, A B C, … so that drift (thermal, other processes, frequency scaling) lands on all
models alike. Per metric: median, IQR, mean ± std and a 95% bootstrap CI of the median; for time, a
two-sided Mann–Whitney U test for every pair, Benjamini–Hochberg adjusted.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .._errors import ConfigError
from .._io import atomic_write_json, atomic_write_text
from ._format import jsonable, md_table, ms, si, size
from ._hooks import Clock
from ._run import Call, LossFn, model_device, preserved
from ._stats import PairwiseTest, Summary, pairwise_mann_whitney, summarize
from .profile import ModelProfile, environment, profile
from .timing import Progress, measure_step

SCHEMA = "layerscope.cost.comparison/1"
TIME_METRICS = ("forward_ms", "backward_ms", "step_ms")


@dataclass
class ModelSummary:
    name: str
    model: str  # class name
    parameters: int
    trainable: int
    flops_forward: int
    flops_backward: int | None
    uncounted_ops: dict[str, int]
    activation_bytes: int | None
    rss_increase_bytes: int | None
    cuda_peak_allocated_bytes: int | None
    gradient_flags: dict[str, str]  # layer -> flag, flagged layers only
    forward_ms: Summary
    backward_ms: Summary | None
    step_ms: Summary

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in TIME_METRICS:
            d[k] = d[k].to_dict() if d[k] is not None else None
        return d


@dataclass
class Comparison:
    unit: str
    models: list[ModelSummary]
    pairwise: list[PairwiseTest]
    settings: dict[str, Any]
    environment: dict[str, Any]
    profiles: dict[str, ModelProfile] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"schema": SCHEMA, "unit": self.unit, "settings": self.settings,
                         "environment": self.environment, "models": [m.to_dict() for m in self.models],
                         "pairwise": [p.to_dict() for p in self.pairwise]})  # type: ignore[return-value]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    def to_markdown(self) -> str:
        return _markdown(self)

    def to_csv(self) -> str:
        return _csv(self)

    def plot(self, path: str | Path, metric: str = "step_ms") -> Path:
        """A bar chart of the metric's median per model with 95% CI error bars (PNG or SVG by suffix)."""
        from .plot import bar_chart

        return bar_chart(self, metric, Path(path))

    def save(self, out_dir: str | Path, *, chart: str | None = "png") -> list[Path]:
        """comparison.md/.csv/.json (and comparison.png/.svg unless ``chart=None``), written atomically."""
        out = Path(out_dir)
        paths = [atomic_write_text(out / "comparison.md", self.to_markdown() + "\n"),
                 atomic_write_text(out / "comparison.csv", self.to_csv()),
                 atomic_write_json(out / "comparison.json", self.to_dict())]
        if chart is not None:
            if chart not in ("png", "svg"):
                raise ConfigError(f"chart must be 'png', 'svg' or None, not {chart!r}")
            paths.append(self.plot(out / f"comparison.{chart}"))
        return paths

    def __rich__(self) -> Any:
        from rich.table import Table

        t = Table(title=f"layerscope compare ({self.settings['repeats']} interleaved rounds, medians "
                        f"[95% CI])", title_justify="left")
        for i, h in enumerate(_HEADER):
            t.add_column(h, justify="left" if i == 0 else "right")
        for row in _rows(self):
            t.add_row(*row)
        return t


def _resolve(models: Mapping[str, Any] | Sequence[Any]) -> dict[str, nn.Module]:
    from .. import zoo

    items = models.items() if isinstance(models, Mapping) else [(m if isinstance(m, str) else None, m)
                                                                for m in models]
    out: dict[str, nn.Module] = {}
    for name, m in items:
        module = zoo.build(m) if isinstance(m, str) else m
        if not isinstance(module, nn.Module):
            raise ConfigError(f"model {name!r} is a {type(m).__name__}, not a torch.nn.Module or a "
                              f"built-in name")
        name = name or type(module).__name__
        if name in out:
            raise ConfigError(f"two models are named {name!r}; pass a dict of distinct names")
        out[name] = module
    if len(out) < 1:
        raise ConfigError("compare() needs at least one model")
    return out


def _inputs(models: dict[str, nn.Module], names: Mapping[str, Any] | Sequence[Any], example_inputs: Any,
            batch_size: int | None) -> dict[str, Call]:
    from ..zoo.baselines import default_input

    zoo_name = {n: (names[n] if isinstance(names, Mapping) else n) for n in models}
    out = {}
    for n in models:
        if isinstance(example_inputs, Mapping) and n in example_inputs:
            x = example_inputs[n]
        elif example_inputs is not None and not isinstance(example_inputs, Mapping):
            x = example_inputs
        elif isinstance(zoo_name[n], str):
            x = default_input(zoo_name[n], batch_size)
        else:
            raise ConfigError(f"no example input for model {n!r}: pass example_inputs (one for all models, "
                              f"or a dict name -> inputs)")
        out[n] = Call.of(x).to(model_device(models[n]))
    return out


def compare(models: Mapping[str, Any] | Sequence[Any], example_inputs: Any = None, *, repeats: int = 20,
            warmup: int = 3, batch_size: int | None = None, convention: str = "flops",
            include_bias: bool = True, include_elementwise: bool = True, training: bool = True,
            backward: bool = True, loss_fn: LossFn | None = None, seed: int = 0,
            progress: Progress | None = None) -> Comparison:
    """Measure ``models`` (a dict name → module or built-in name, or a list of built-in names/modules) on
    ``example_inputs`` (one input for all, a dict name → input, or None for the built-ins' defaults, with
    ``batch_size``). Times come from ``repeats`` interleaved rounds after ``warmup`` rounds."""
    if repeats < 2:
        raise ConfigError(f"compare() needs repeats >= 2 for its statistics (got {repeats})")
    resolved = _resolve(models)
    calls = _inputs(resolved, models if isinstance(models, Mapping) else list(resolved), example_inputs,
                    batch_size)
    profiles = {}
    for i, (name, m) in enumerate(resolved.items()):
        call = calls[name]
        profiles[name] = profile(m, call.kwargs or call.args, convention=convention,
                                 include_bias=include_bias, include_elementwise=include_elementwise,
                                 training=training,
                                 backward=backward, loss_fn=loss_fn, repeats=0, layer_times=False)
        if progress:
            progress("profile", i + 1, len(resolved))
    samples = _interleaved(resolved, calls, profiles, warmup, repeats, training, loss_fn, progress)
    summaries = [_summary(name, profiles[name], samples[name], seed) for name in resolved]
    metric = "step_ms" if all(s.backward_ms is not None for s in summaries) else "forward_ms"
    pairwise = pairwise_mann_whitney(metric, {n: samples[n][metric] for n in resolved})
    if metric == "step_ms":
        pairwise += pairwise_mann_whitney("forward_ms", {n: samples[n]["forward_ms"] for n in resolved})
    settings = {"repeats": repeats, "warmup": warmup, "order": list(resolved), "interleaved": True,
                "convention": convention, "include_bias": include_bias,
                "include_elementwise": include_elementwise,
                "training": training, "backward": backward, "seed": seed,
                "inputs": {n: c.describe() for n, c in calls.items()}}
    unit = next(iter(profiles.values())).flops.unit
    return Comparison(unit, summaries, pairwise, settings, environment(), profiles)


def _interleaved(models: dict[str, nn.Module], calls: dict[str, Call], profiles: dict[str, ModelProfile],
                 warmup: int, repeats: int, training: bool, loss_fn: LossFn | None,
                 progress: Progress | None) -> dict[str, dict[str, list[float]]]:
    samples = {n: {k: [] for k in TIME_METRICS} for n in models}
    with ExitStack() as stack:
        for name, m in models.items():
            if model_device(m).type == "meta":
                raise ConfigError(f"model {name!r} is on the meta device: it cannot be timed")
            stack.enter_context(preserved(m, [model_device(m)]))
            m.train(training)
        clocks = {n: Clock(model_device(m)) for n, m in models.items()}
        for r in range(warmup + repeats):
            for name, m in models.items():  # A B C, A B C, …
                with_bwd = profiles[name].flops.backward is not None
                f, b = measure_step(m, calls[name], clocks[name], with_backward=with_bwd, loss_fn=loss_fn)
                if r >= warmup:
                    samples[name]["forward_ms"].append(f)
                    if b is not None:
                        samples[name]["backward_ms"].append(b)
                    samples[name]["step_ms"].append(f + (b or 0.0))
            if progress:
                progress("timing", r + 1, warmup + repeats)
    return samples


def _summary(name: str, p: ModelProfile, s: dict[str, list[float]], seed: int) -> ModelSummary:
    g = {x.name: x.flag for x in p.gradients.flagged} if p.gradients else {}
    return ModelSummary(
        name, p.model, p.parameters.total, p.parameters.trainable, p.flops.forward, p.flops.backward,
        p.flops.uncounted, p.memory.activation_bytes if p.memory else None,
        p.memory.rss_increase_bytes if p.memory else None,
        p.memory.cuda_peak_allocated_bytes if p.memory else None, g,
        summarize(s["forward_ms"], ci=True, seed=seed),
        summarize(s["backward_ms"], ci=True, seed=seed) if s["backward_ms"] else None,
        summarize(s["step_ms"], ci=True, seed=seed))


# ---------------------------------------------------------------- renderings

_HEADER = ["model", "params", "FLOPs fwd", "FLOPs bwd", "activations", "forward ms", "backward ms", "step ms",
           "step mean ± std"]


def _ci(s: Summary | None) -> str:
    if s is None:
        return "–"
    ci = f" [{ms(s.ci_low)}, {ms(s.ci_high)}]" if s.ci_low is not None else ""
    return f"{ms(s.median)}{ci}"


def _rows(c: Comparison) -> list[list[str]]:
    return [[m.name, si(m.parameters), si(m.flops_forward) + (" *" if m.uncounted_ops else ""),
             si(m.flops_backward), size(m.activation_bytes), _ci(m.forward_ms), _ci(m.backward_ms),
             _ci(m.step_ms), f"{ms(m.step_ms.mean)} ± {ms(m.step_ms.std)}"] for m in c.models]


def _markdown(c: Comparison) -> str:
    head = [h.replace("FLOPs", c.unit) for h in _HEADER]
    parts = ["# layerscope compare", "",
             f"{c.settings['repeats']} interleaved rounds ({', '.join(c.settings['order'])}) after "
             f"{c.settings['warmup']} warm-up round(s); times in ms as median [95% bootstrap CI of the "
             f"median]; torch {c.environment['torch']}, {c.environment['threads']} threads.", "",
             md_table(head, _rows(c))]
    unc = {m.name: m.uncounted_ops for m in c.models if m.uncounted_ops}
    if unc:
        parts += ["", "\\* ops with no FLOP formula (not in the count): " + "; ".join(
            f"{n}: " + ", ".join(f"{op} ×{k}" for op, k in ops.items()) for n, ops in unc.items())]
    if c.pairwise:
        parts += ["", "## Pairwise Mann–Whitney U (two-sided, Benjamini–Hochberg adjusted)", "",
                  md_table(["metric", "a", "b", "U", "p", "p adj.", "P(a > b)", "median a / b"],
                           [[p.metric, p.a, p.b, f"{p.u:g}", f"{p.p_value:.3g}", f"{p.p_adjusted:.3g}",
                             f"{p.prob_a_greater:.2f}", f"{p.median_ratio:.3g}" if p.median_ratio else "–"]
                            for p in c.pairwise])]
    return "\n".join(parts)


def _csv(c: Comparison) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    stats_cols = ["median", "iqr", "mean", "std", "ci_low", "ci_high", "n"]
    w.writerow(["model", "class", "parameters", "trainable", f"{c.unit}_forward", f"{c.unit}_backward",
                "activation_bytes", "rss_increase_bytes", "uncounted_ops"]
               + [f"{m}_{s}" for m in TIME_METRICS for s in stats_cols])
    for m in c.models:
        row: list[Any] = [m.name, m.model, m.parameters, m.trainable, m.flops_forward, m.flops_backward,
                          m.activation_bytes, m.rss_increase_bytes, sum(m.uncounted_ops.values())]
        for metric in TIME_METRICS:
            s = getattr(m, metric)
            row += [("" if s is None else (s.iqr if k == "iqr" else getattr(s, k))) for k in stats_cols]
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()
