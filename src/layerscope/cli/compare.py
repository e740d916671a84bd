"""``layerscope compare``: several models measured in one run (interleaved), with medians, bootstrap CIs
and pairwise Mann–Whitney U tests; Markdown, CSV, JSON and a bar chart with --out."""

from __future__ import annotations

import argparse
from typing import Any

from .._errors import ConfigError
from .._optional import has
from .profile import (
    add_counting_arguments,
    add_input_arguments,
    counting_kwargs,
    load,
    make_console,
    progress_bar,
)

EXAMPLES = """examples:
  layerscope compare --models mlp,cnn,lstm,gru,transformer
  layerscope compare --models cnn,resnet18-cifar --batch-size 16 --repeats 30 --out runs/cmp/
  layerscope compare --models a.py:build,b.py:build --input-shape 8,3,32,32 --chart svg --out runs/ab/
"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("compare", parents=[common], help="several models measured in one run",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="comma-separated built-in names and/or FILE.py:FACTORY")
    add_input_arguments(p)
    add_counting_arguments(p)
    p.add_argument("--repeats", type=int, default=20, help="interleaved timed rounds (default 20, >= 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--out", help="write comparison.md/.csv/.json and the chart to this directory")
    p.add_argument("--chart", default="png", choices=("png", "svg", "none"), help="chart format with --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cost import compare

    specs = [s.strip() for s in args.models.split(",") if s.strip()]
    if not specs:
        raise ConfigError("--models needs at least one model, e.g. --models mlp,cnn")
    models, inputs = {}, {}
    for spec in specs:
        name, model, x = load(spec, args)
        if name in models:
            raise ConfigError(f"--models names {name!r} twice")
        models[name], inputs[name] = model, x
    console = make_console()
    with progress_bar(console, not args.no_progress and console.is_terminal) as progress:
        result = compare(models, inputs, repeats=args.repeats, warmup=args.warmup, seed=args.seed,
                         progress=progress, **counting_kwargs(args))
    console.print(result)
    if args.out:
        chart = None if args.chart == "none" else args.chart
        if chart and not has("matplotlib"):
            console.print("no chart: matplotlib is not installed (pip install 'layerscope[plots]')")
            chart = None
        for path in result.save(args.out, chart=chart):
            console.print(f"wrote {path}", soft_wrap=True)
    return 0
