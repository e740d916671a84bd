"""Fused channel reduction: native kernel vs the torch paths vs a memcpy of the same bytes.

For 1, 8 and 64 MiB float32 activations in two layouts (a conv map [N, C, H·W], channels first, and
a transformer activation [B, T, C], channels last), measured in ONE run, repeats interleaved, medians:

  native   — kernels.channel_reduce(view, thresholds, backend="native"): one read, every statistic
  torch    — the same call with backend="torch" (the library's torch reference path)
  ops      — the plain torch ops the issue measured: var_mean, amin, amax, (x > t).sum per threshold
  memcpy   — dst.copy_(x) into a preallocated tensor (read + write of the same bytes)
  alloc+cp — torch.empty_like(x).copy_(x) (what a copy costs with a fresh buffer)

Then the histogram of a ReLU activation (half exact zeros) into 64 bins over [0, 8):

  pow2     — kernels.histogram_pow2(x, -3, 0, 64, backend="native"): bin = floor(x·2**3), no edge test
  generic  — kernels.histogram(x, 64, 0.0, 8.0, backend="native"): float64 estimate + edge correction
  histc    — torch.histc(x, 64, 0, 8)

Not a test: prints numbers, asserts nothing. Other processes on the machine make timings noisy.

    python benchmarks/bench_kernels.py                # 2 threads, 15 repeats
    python benchmarks/bench_kernels.py --threads 1 --repeats 31
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from layerscope import kernels
from layerscope.capture.layout import Axis, LayoutView

THRESHOLDS = (0.0, 0.5)


def torch_ops(x: torch.Tensor, dims: tuple[int, ...]) -> None:
    """The several-pass torch baseline of the issue (var_mean, min, max, one count per threshold)."""
    torch.var_mean(x, dim=dims, correction=0)
    x.amin(dim=dims)
    x.amax(dim=dims)
    for t in THRESHOLDS:
        (x > t).sum(dim=dims)


def activation(mib: int, channels_last: bool) -> LayoutView:
    numel = mib * 2**20 // 4
    if channels_last:  # [B, T, C] with C = 1024
        shape = (8, numel // (8 * 1024), 1024)
    else:  # [N, C, H·W] with N = 64, C = 64
        shape = (64, 64, numel // (64 * 64))
    x = torch.randn(*shape)
    return LayoutView(
        x, channels_last, Axis.TIME if channels_last else Axis.SPACE, (shape[1 if channels_last else 2],)
    )


def medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function; the repeats are interleaved so that drift hits all alike.

    Each timed call follows an untimed call of the same function, so every variant is timed in the
    same state — its data in cache, the OpenMP threads awake — as a kernel that runs right after the
    layer that wrote the activation; without it the first function of a round pays for waking the
    threads and refetching what the previous function evicted (several times a 1 MiB kernel).
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            f()
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(mib: int, channels_last: bool, repeats: int) -> dict[str, float]:
    view = activation(mib, channels_last)
    x = view.data
    dims = (0, 1) if channels_last else (0, 2)
    dst = torch.empty_like(x)
    fns = {
        "native": lambda: kernels.channel_reduce(view, THRESHOLDS, backend="native"),
        "torch": lambda: kernels.channel_reduce(view, THRESHOLDS, backend="torch"),
        "ops": lambda: torch_ops(x, dims),
        "memcpy": lambda: dst.copy_(x),
        "alloc+cp": lambda: torch.empty_like(x).copy_(x),
    }
    return medians(fns, repeats)


def bench_histogram(mib: int, repeats: int) -> dict[str, float]:
    x = torch.randn(mib * 2**20 // 4).relu_()  # [M] float32, half zeros: one hot bin
    fns = {
        "pow2": lambda: kernels.histogram_pow2(x, -3, 0, 64, backend="native"),
        "generic": lambda: kernels.histogram(x, 64, 0.0, 8.0, backend="native"),
        "histc": lambda: torch.histc(x, 64, 0, 8),
    }
    return medians(fns, repeats)


def print_histograms(sizes: list[int], repeats: int, threads: int) -> None:
    print("\nhistogram, 64 bins, ReLU float32 data  (ns/value/thread = time · threads / values)")
    print(f"{'size':>6} {'pow2':>9} {'generic':>9} {'histc':>9} │ {'gen/pow2':>8} {'histc/pow2':>10} {'pow2 ns':>8}")
    for mib in sizes:
        t = bench_histogram(mib, repeats)
        ms = {k: v * 1e3 for k, v in t.items()}
        per = t["pow2"] * threads / (mib * 2**20 // 4) * 1e9
        print(
            f"{mib:>4}Mi {ms['pow2']:>8.3f}m {ms['generic']:>8.3f}m {ms['histc']:>8.3f}m │"
            f" {t['generic'] / t['pow2']:>7.1f}x {t['histc'] / t['pow2']:>9.1f}x {per:>8.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", default="1,8,64", help="MiB, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backend, why = kernels.select_backend(torch.device("cpu"), torch.float32)
    print(f"threads={args.threads}  repeats={args.repeats} (medians)  CPU backend: {backend.name} ({why})")
    print(
        f"{'size':>6} {'layout':<12} {'native':>9} {'torch':>9} {'ops':>9} {'memcpy':>9} {'alloc+cp':>9} │"
        f" {'torch/nat':>9} {'ops/nat':>8} {'nat/memcpy':>10} {'nat/alloc+cp':>12}"
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    for mib in sizes:
        for channels_last in (False, True):
            t = bench(mib, channels_last, args.repeats)
            layout = "[B,T,C] last" if channels_last else "[N,C,S] first"
            ms = {k: v * 1e3 for k, v in t.items()}
            nat = t["native"]
            print(
                f"{mib:>4}Mi {layout:<12} {ms['native']:>8.3f}m {ms['torch']:>8.3f}m {ms['ops']:>8.3f}m"
                f" {ms['memcpy']:>8.3f}m {ms['alloc+cp']:>8.3f}m │ {t['torch'] / nat:>8.1f}x"
                f" {t['ops'] / nat:>7.1f}x {nat / t['memcpy']:>9.2f}x {nat / t['alloc+cp']:>11.2f}x"
            )
    print_histograms(sizes, args.repeats, args.threads)


if __name__ == "__main__":
    main()
