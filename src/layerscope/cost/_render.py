"""Terminal (rich) and Markdown renderings of a ModelProfile. Presentation only: no statistic here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ._format import md_table, ms, si, size

if TYPE_CHECKING:
    from .profile import LayerProfile, ModelProfile


def _summary_rows(p: ModelProfile) -> list[tuple[str, str]]:
    f, u = p.flops, p.flops.unit
    par = p.parameters
    inputs = ", ".join(f"{i['shape']} {i['dtype']}" for i in p.inputs)
    rows = [("model", f"{p.model} on {p.device}, input {inputs}"),
            ("parameters", f"{par.total:,} ({par.trainable:,} trainable), {size(par.bytes)} "
                           + ", ".join(f"{k}: {size(v)}" for k, v in par.bytes_by_dtype.items())),
            ("buffers", f"{par.buffers:,} elements, {size(par.buffer_bytes)}")]
    if par.shared:
        rows.append(("tied", "; ".join(" = ".join(s.names) + f" ({s.numel:,}, counted once)"
                                       for s in par.shared)))
    cats = f.by_category()
    rows.append((f"{u} forward", f"{si(f.forward)} ({f.forward:,})"))
    if f.backward is not None:
        ratio = f" = {f.backward / f.forward:.2f} × forward" if f.forward else ""
        rows.append((f"{u} backward", f"{si(f.backward)} ({f.backward:,}) measured{ratio}"))
    flags = (f"bias {'in' if f.include_bias else 'out'}, "
             f"elementwise {'in' if f.include_elementwise else 'out'}"
             + (", causal halved" if f.causal_halving else ""))
    rows.append((f"{u} by kind", f"matmul {si(cats.get('matmul', 0))}, "
                                 f"elementwise {si(cats.get('elementwise', 0))} ({flags})"))
    unc = f.uncounted
    rows.append(("uncounted ops", ", ".join(f"{k} ×{v}" for k, v in unc.items()) if unc else "none"))
    if p.timing:
        t = p.timing
        for label, s in (("forward ms", t.forward_ms), ("backward ms", t.backward_ms),
                         ("step ms", t.step_ms)):
            if s is not None:
                rows.append((label, f"median {ms(s.median)}, IQR {ms(s.iqr)}, "
                                    f"mean {ms(s.mean)} ± {ms(s.std)} (n={s.n})"))
        rows.append(("timing", f"{t.clock}, {t.warmup} warm-up, {t.threads} threads"))
    if p.memory:
        m = p.memory
        if m.activation_bytes is not None:
            rows.append(("activations", f"{size(m.activation_bytes)} saved for backward"))
        if m.rss_before_bytes is not None:
            rows.append(("RSS", f"step peak {size(m.rss_step_peak_bytes)} "
                                f"(+{size(m.rss_increase_bytes)} during the step), "
                                f"process peak {size(m.peak_rss_bytes)}"))
        if m.cuda_peak_allocated_bytes is not None:
            rows.append(("CUDA", f"peak allocated {size(m.cuda_peak_allocated_bytes)} "
                                 f"(+{size(m.cuda_increase_bytes)}),"
                                 f" reserved {size(m.cuda_peak_reserved_bytes)}"))
    if p.gradients:
        bad = p.gradients.flagged
        rows.append(("gradient flow", ", ".join(f"{g.name or '(model)'}: {g.flag}" for g in bad) if bad
                     else f"no layer flagged (median ‖g‖/‖w‖ {p.gradients.median_ratio:.3g})"
                     if p.gradients.median_ratio else "no layer flagged"))
    rows += [(f"skipped: {k}", v) for k, v in p.skipped.items()]
    return rows


_LAYER_HEADER = ["layer", "type", "params", "fwd", "bwd", "fwd ms", "activations", "‖g‖/‖w‖", "calls"]


def _layer_cells(layer: LayerProfile, root: str, indent: bool) -> list[str]:
    name = layer.name or f"({root})"
    if indent:
        name = "  " * layer.depth + (layer.name.rpartition(".")[2] or name)
    flag = f" {layer.grad_flag}" if layer.grad_flag not in (None, "ok") else ""
    return [name + (" [tied]" if layer.tied else "") + (f" [{layer.uncounted_calls} uncounted]"
            if layer.uncounted_calls else ""), layer.type, f"{layer.parameters_total:,}",
            si(layer.flops_forward), si(layer.flops_backward), ms(layer.forward_ms),
            size(layer.activation_bytes) if layer.activation_bytes else "",
            (f"{layer.grad_ratio:.2g}" if layer.grad_ratio is not None else "") + flag, str(layer.calls)]


def _visible(p: ModelProfile, depth: int | None) -> list[LayerProfile]:
    return [layer for layer in p.layers if depth is None or layer.depth <= depth]


def profile_renderable(p: ModelProfile, depth: int | None) -> Any:
    summary = Table(show_header=False, box=None, title=f"layerscope profile · {p.model}",
                    title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    for k, v in _summary_rows(p):
        summary.add_row(k, v)
    layers = Table(title=f"layers ({p.flops.unit}, inclusive of children)", title_justify="left")
    for i, h in enumerate(_LAYER_HEADER):
        layers.add_column(h, justify="left" if i < 2 else "right")
    for layer in _visible(p, depth):
        cells = _layer_cells(layer, p.model, indent=True)
        flagged = layer.grad_flag not in (None, "ok") or layer.uncounted_calls
        layers.add_row(*cells, style="yellow" if flagged else None)
    parts: list[Any] = [summary, layers]
    if depth is not None and any(layer.depth > depth for layer in p.layers):
        parts.append(Text(f"(layers deeper than {depth} hidden; --depth to show more)", style="dim"))
    return Group(*parts)


def profile_markdown(p: ModelProfile, depth: int | None) -> str:
    parts = [f"# layerscope profile: {p.model}", "",
             md_table(["", ""], [[k, v] for k, v in _summary_rows(p)]), "",
             f"## Layers ({p.flops.unit}, inclusive of children)", "",
             md_table(_LAYER_HEADER, [_layer_cells(x, p.model, indent=False) for x in _visible(p, depth)]),
             "",
             "## Ops", "",
             md_table(["op", "kind", "calls fwd", "calls bwd", f"{p.flops.unit} fwd", f"{p.flops.unit} bwd"],
                      [[o.op, o.category, str(o.calls_forward), str(o.calls_backward), f"{o.forward:,}",
                        f"{o.backward:,}"] for o in p.flops.ops])]
    return "\n".join(parts)
