"""``layerscope profile``: parameters, FLOPs (forward and backward, measured), time, memory and gradient
flow of one model, per layer."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._device import resolve_device
from .._errors import ConfigError

EXAMPLES = """examples:
  layerscope profile --model resnet18-cifar --batch-size 32
  layerscope profile --model cnn --input-shape 8,3,64,64 --macs --repeats 20 --out runs/cnn/
  layerscope profile --model net.py:build_model --input-shape 1,3,224,224 --eval --forward-only
  layerscope profile --model resnet18 --device meta          # FLOPs and parameters only, nothing runs
"""

_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("profile", parents=[common], help="cost of one model: params, FLOPs, time, memory",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a built-in name (mlp, cnn, lstm, gru, transformer, "
                                                    "resnet18, resnet18-cifar …) or FILE.py:FACTORY")
    add_input_arguments(p)
    add_counting_arguments(p)
    p.add_argument("--causal-halving", action="store_true", help="count causal fused attention at half")
    p.add_argument("--repeats", type=int, default=10, help="timed steps after warm-up (0: no timing)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--no-layer-times", action="store_true", help="skip the per-layer forward timing runs")
    p.add_argument("--depth", type=int, default=2, help="layer depth shown in the terminal (default 2)")
    p.add_argument("--out", help="write profile.json and profile.md to this directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", help="example input shape, e.g. 1,3,32,32 (default: the model's own)")
    p.add_argument("--batch-size", type=int, help="replace the batch dimension of the default input shape")
    p.add_argument("--input-dtype", default="float32", choices=_DTYPES, help="dtype of the random input")
    p.add_argument("--input-high", type=int, default=2, help="int64 inputs are drawn from [0, HIGH)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, meta (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random example input")


def add_counting_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--macs", action="store_true", help="count multiply–accumulates (default: FLOPs = 2×MACs)")
    p.add_argument("--no-bias", action="store_true", help="leave bias adds out of the count")
    p.add_argument("--no-elementwise", action="store_true", help="leave elementwise ops out of the count")
    p.add_argument("--eval", action="store_true", help="eval mode (default: train mode)")
    p.add_argument("--forward-only", action="store_true", help="no backward pass")


def parse_shape(text: str) -> tuple[int, ...]:
    parts = [t for t in text.replace("x", ",").replace(" ", "").split(",") if t]
    try:
        shape = tuple(int(t) for t in parts)
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(f"--input-shape takes positive integers separated by commas, e.g. 1,3,32,32; "
                          f"got {text!r}")
    return shape


def example_input(args: argparse.Namespace, zoo_name: str | None) -> Any:
    """The random example input the flags describe (the built-in model's default shape when none given)."""
    import torch

    from ..zoo.baselines import default_input_shape

    if args.input_shape:
        shape = parse_shape(args.input_shape)
        if args.batch_size is not None:
            shape = (args.batch_size, *shape[1:])
    elif zoo_name is not None:
        shape = default_input_shape(zoo_name, args.batch_size)
    else:
        raise ConfigError("--input-shape is required for a model from a file (e.g. --input-shape 1,3,32,32)")
    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(args.seed)
    if args.input_dtype == "int64":
        return torch.randint(0, args.input_high, shape, generator=g).to(device)
    return torch.randn(shape, generator=g).to(device=device, dtype=getattr(torch, args.input_dtype))


def load(spec: str, args: argparse.Namespace) -> tuple[str, Any, Any]:
    """(display name, model on --device, example input) for one --model spec."""
    import torch

    from .. import zoo
    from .._loading import load_model

    name, model = load_model(spec)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.input_dtype) if args.input_dtype != "int64" else None
    model = model.to(device=device, dtype=dtype) if dtype not in (None, torch.float32) else model.to(device)
    return name, model, example_input(args, spec if spec in zoo.MODELS else None)


def counting_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"convention": "macs" if args.macs else "flops", "include_bias": not args.no_bias,
            "include_elementwise": not args.no_elementwise, "training": not args.eval,
            "backward": not args.forward_only}


def make_console() -> Console:
    """The terminal's width on a terminal; 160 columns when the output goes to a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


@contextmanager
def progress_bar(console: Console, enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar with one task per stage; yields the callback profile()/compare() take."""
    if not enabled:
        yield None
        return
    columns = (TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def run(args: argparse.Namespace) -> int:
    from ..cost import profile

    if args.depth < 0:
        raise ConfigError(f"--depth must be >= 0, got {args.depth}")
    console = make_console()
    _, model, x = load(args.model, args)
    with progress_bar(console, not args.no_progress and console.is_terminal) as progress:
        result = profile(model, x, causal_halving=args.causal_halving, repeats=args.repeats,
                         warmup=args.warmup, layer_times=not args.no_layer_times, progress=progress,
                         **counting_kwargs(args))
    console.print(result.render(depth=args.depth))
    if args.out:
        for path in result.save(args.out):
            console.print(f"wrote {path}", soft_wrap=True)
    return 0
