"""``layerscope report``: re-render the reports of a saved run from its report.json alone (no model)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

EXAMPLES = """examples:
  layerscope report run1/                       # rewrite run1/report.html from run1/report.json
  layerscope report run1/report.json --out shared/ --format html,json
  layerscope report run1/ --summary             # also print the per-layer table
"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", parents=[common], help="re-render a saved report (HTML …) from report.json",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a run directory holding report.json, or the report.json file itself")
    p.add_argument("--out", default=None, help="output directory (default: the directory of report.json)")
    p.add_argument("--format", default="html", help="comma-separated report formats (default: html)")
    p.add_argument("--summary", action="store_true", help="print the per-layer table too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import SINKS, ProbeResult
    from ..report.terminal import print_summary

    source = Path(args.path)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    for fmt in formats:
        SINKS.get(fmt)  # an unknown format fails before anything is read or written
    result = ProbeResult.load(source)
    out = Path(args.out) if args.out else (source if source.is_dir() else source.parent)
    console = Console()
    if args.summary:
        print_summary(result, console)
    paths = result.save(out, formats=formats)
    console.print("wrote " + ", ".join(str(p) for p in paths))
    return 0
