"""``layerscope info``: versions, threads, and which kernel backend runs on CPU and on CUDA, and why."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

EXAMPLES = """examples:
  layerscope info          # a table
  layerscope info --json   # the same as JSON (for bug reports)
"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "info",
        parents=[common],
        help="versions, threads and kernel backends",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def gather() -> dict[str, Any]:
    import layerscope

    from ..kernels import kernel_environment

    env = kernel_environment()
    env["versions"] = {"layerscope": layerscope.__version__, **env["versions"]}
    return env


def _native_line(native: dict[str, Any]) -> str:
    if "error" in native:
        return f"not built — {native['error']}"
    omp = f"OpenMP {native['openmp_version']}" if native.get("openmp") else "without OpenMP (one thread)"
    clones = native.get("simd_clones") or "none"
    return f"built, {omp}, SIMD baseline {native.get('simd', '?')}, hot loops also for: {clones}"


def run(args: argparse.Namespace) -> int:
    env = gather()
    console = Console()
    if args.json:
        console.print_json(json.dumps(env))
        return 0
    about = Table(show_header=False, box=None, pad_edge=False)
    for name, version in env["versions"].items():
        about.add_row(name, version)
    about.add_row("threads", f"{env['threads']} (torch.get_num_threads())")
    about.add_row("native (layerscope._C)", _native_line(env["native"]))
    about.add_row("triton", env["triton"] or "not installed")
    about.add_row("CUDA", "available" if env["cuda"] else "not available")
    console.print(about)
    backends = Table(title="kernel backends (float32)")
    for col in ("kernel", "device", "backend", "why"):
        backends.add_column(col, overflow="fold")
    for kernel, devices in env["backends"].items():
        for device, line in devices.items():
            name, _, why = line.partition(" — ")
            backends.add_row(kernel, device, name, why)
    console.print(backends)
    return 0
