"""``layerscope analyze``: stream data through a model and report every layer's statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._errors import ConfigError

EXAMPLES = """examples:
  layerscope analyze                                   # the built-in demo (digits CNN), every statistic
  layerscope analyze --model sequence-cnn              # the sequence demo (planted frequencies)
  layerscope analyze --model net.py:build_model --data val.npz --batch-size 64 --batches 100 \\
                     --layers "conv*,fc*" --out run1/ --device cpu
"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("analyze", parents=[common], help="per-layer statistics of a model on data",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="FILE.py:FACTORY, or a built-in model name (default: digits-cnn, "
                   "a demo that brings its data; so does sequence-cnn)")
    p.add_argument("--data", help="inputs as .npz (arrays 'x' and optional 'y') or .pt (tensor or (x, y)); "
                   "required unless --model is a demo")
    p.add_argument("--reference-data", help="a profiling pass over this data first enables KMNC/NBC/SNAC coverage")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=None, help="stop after this many batches (default: all)")
    p.add_argument("--layers", default="*", help="comma-separated globs / re:REGEX / exact names (default: all leaves)")
    p.add_argument("--exclude", default="", help="patterns of layers to leave out")
    p.add_argument("--stats", default="all", help="statistics to gather, comma-separated, or 'all' (default)")
    p.add_argument("--no-impact", dest="impact", action="store_false",
                   help="skip the forward+backward pass that computes the Taylor impact (ζ) scores")
    p.add_argument("--nperseg", type=int, default=None, help="Welch segment length for time-axis spectra")
    p.add_argument("--fs", type=float, default=None, help="sampling rate of the time axis (default 1: normalised)")
    p.add_argument("--spectrum-samples", default=None,
                   help="samples per batch that feed the spectra (default 8; 'all' for every sample)")
    p.add_argument("--spatial-samples", default=None,
                   help="samples per batch that feed the spatial density grids (default 8; 'all' for every sample)")
    p.add_argument("--covariance-samples", default=None,
                   help="samples per batch whose rows feed the channel covariance (default 8; 'all' for every row)")
    p.add_argument("--stream-spectrum", action="store_true",
                   help="also the spectrum of each channel's batch mean over consecutive batches")
    p.add_argument("--thresholds", default="0", help="activation-rate thresholds, comma-separated")
    p.add_argument("--out", default="report", help="output directory (default: ./report)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 … (default: cpu)")
    p.add_argument("--backend", default=None, help="force a kernel backend: torch, native, triton")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def _demo_inputs(name: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    from ..zoo import DEMOS

    model, (x_train, _, x_test, y_test), described = DEMOS.get(name)()
    return model, (x_test, y_test), x_train, {"model": f"{name} (built-in demo)", "data": described}


def _samples(text: str, flag: str) -> int | None:
    """A per-batch sample budget: a number, or 'all' (None: every sample)."""
    value = text.strip().lower()
    if value != "all" and (not value.isdigit() or int(value) < 1):
        raise ConfigError(f"{flag} takes a number of at least 1 or 'all', got {text!r}")
    return None if value == "all" else int(value)


def _accumulator_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.nperseg is not None:
        options["nperseg"] = args.nperseg
    if args.fs is not None:
        options["fs"] = args.fs
    for option in ("spectrum_samples", "spatial_samples", "covariance_samples"):
        if getattr(args, option) is not None:
            options[option] = _samples(getattr(args, option), "--" + option.replace("_", "-"))
    if args.stream_spectrum:
        options["stream_spectrum"] = True
    return options


def _user_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, Any]]:
    from ..zoo import DEMOS

    if not args.data and args.model in DEMOS:
        return _demo_inputs(args.model)
    if not args.data:
        raise ConfigError(f"--data is required with --model (a .npz or .pt file of inputs); the built-in "
                          f"demos {', '.join(DEMOS.names())} bring their own")
    from .._data import load_arrays
    from .._loading import load_model

    _, model = load_model(args.model)
    data = load_arrays(args.data)
    reference = load_arrays(args.reference_data)[0] if args.reference_data else None
    return model, data, reference, {"model": args.model, "data": str(args.data),
                                    "reference_data": args.reference_data}


def run(args: argparse.Namespace) -> int:
    import torch

    from .._analyze import analyze
    from ..report.terminal import print_summary

    if args.batches is not None and args.batches < 1:
        raise ConfigError(f"--batches must be at least 1 (got {args.batches}); omit it to use all the data")
    torch.manual_seed(args.seed)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # files and pipes get the whole table
    model, data, reference, described = _user_inputs(args) if args.model else _demo_inputs("digits-cnn")
    n = data[0].shape[0]
    total = -(-n // args.batch_size) if args.batch_size > 0 else 0
    total = min(total, args.batches) if args.batches else total
    config = {**described, "layers": args.layers, "seed": args.seed, "command": " ".join(sys.argv[1:])}
    show = not args.no_progress and console.is_terminal
    with Progress(TextColumn("analyze"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not show, transient=True) as bar:
        task = bar.add_task("batches", total=total)
        result = analyze(
            model, data, batch_size=args.batch_size, batches=args.batches, layers=args.layers,
            exclude=args.exclude or (), stats=args.stats, impact=args.impact,
            thresholds=_floats(args.thresholds, "--thresholds"), reference_data=reference,
            device=args.device, backend=args.backend, config=config,
            progress=lambda k: bar.advance(task, k), **_accumulator_options(args),
        )
    print_summary(result, console)
    paths = result.save(Path(args.out))
    console.print("wrote " + ", ".join(str(p) for p in paths))
    if result.partial:
        console.print("[yellow]interrupted: the report is partial[/]")
        return 130
    return 0
