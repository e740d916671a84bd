"""Power-of-two histogram counts: fused into the channel reduction and whole-tensor, ns per value.

For three float32 activations [N, C, S] (channels first, as a conv layer writes them):

  relu    — [64, 64, 1024], half exact zeros (one hot bin)
  normal  — [64, 64, 1024], standard normal
  short   — [64, 512, 16], standard normal (4×4 feature maps: runs of 16 values)

it times, in ONE run, repeats interleaved, medians:

  plain   — _C.channel_reduce(x, …, hist=None): the reduction alone
  fused   — _C.channel_reduce(x, …, hist=(e, j0, 64)): the reduction counting the histogram in its read
  pow2    — _C.histogram_pow2(x, …): the whole-tensor count

and prints fused − plain and pow2 as ns/value/thread (time · threads / values) and fused/plain.
With --baseline PATH (a _C*.so built from another commit, e.g. kept in /tmp) the same calls of that
build are timed in the same rounds, so that old and new meet the same noise.

Not a test: prints numbers, asserts nothing. Other processes on the machine make timings noisy.

    PYTHONPATH=src python benchmarks/bench_histogram.py --baseline /tmp/hist_base/_C.cpython-311-x86_64-linux-gnu.so
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
from collections.abc import Callable
from types import ModuleType

import numpy as np
import torch
from bench_kernels import medians  # warm, interleaved medians (run as benchmarks/bench_histogram.py)

from layerscope import _C
from layerscope.stats.histogram import bin_index, canonical_exponent

BINS = 64
THRESHOLDS = np.array([0.0, 0.5])


def load_build(path: str) -> ModuleType:
    """Another build of the extension, loaded beside layerscope._C (its init symbol is PyInit__C)."""
    loader = importlib.machinery.ExtensionFileLoader("_C", path)
    spec = importlib.util.spec_from_file_location("_C", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def cases() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "relu": torch.randn(64, 64, 1024).relu_(),
        "normal": torch.randn(64, 64, 1024),
        "short": torch.randn(64, 512, 16),
    }


def calls(c: ModuleType, x: torch.Tensor, threads: int) -> dict[str, Callable[[], object]]:
    a = x.numpy()
    lo, hi = float(x.min()), float(x.max())
    e = canonical_exponent(lo, hi, BINS)
    grid = (e, bin_index(lo, e), BINS)
    flat = a.reshape(-1)
    return {
        "plain": lambda: c.channel_reduce(a, "float32", THRESHOLDS, threads, None),
        "fused": lambda: c.channel_reduce(a, "float32", THRESHOLDS, threads, grid),
        "pow2": lambda: c.histogram_pow2(flat, "float32", grid[0], grid[1], BINS, threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--baseline", help="path of another _C*.so to time in the same rounds")
    args = parser.parse_args()
    builds = {"new": _C}
    if args.baseline:
        builds = {"old": load_build(args.baseline), "new": _C}
    print(f"{args.threads} threads, {args.repeats} repeats, medians; ns = ns/value/thread")
    print(f"{'case':>7} {'build':>5} │ {'plain':>8} {'fused':>8} {'pow2':>8} │"
          f" {'hist ns':>7} {'pow2 ns':>7} {'fused/plain':>11}")
    for case, x in cases().items():
        fns = {(b, k): f for b, c in builds.items() for k, f in calls(c, x, args.threads).items()}
        t = medians(fns, args.repeats)
        per = args.threads / x.numel() * 1e9
        for b in builds:
            plain, fused, pow2 = t[b, "plain"], t[b, "fused"], t[b, "pow2"]
            print(
                f"{case:>7} {b:>5} │ {plain * 1e3:>7.2f}m {fused * 1e3:>7.2f}m {pow2 * 1e3:>7.2f}m │"
                f" {(fused - plain) * per:>7.3f} {pow2 * per:>7.3f} {fused / plain:>10.2f}x"
            )


if __name__ == "__main__":
    main()
