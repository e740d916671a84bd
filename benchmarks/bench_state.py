"""Per-update time of the coverage and moments accumulators: native in-place state updates vs the torch code.

One layer's update from a precomputed channel reduction (the probe's per-layer cost beyond the fused
kernel), batch N, C channels. The two paths run interleaved in one process, in rounds; each figure is
the median over rounds of the mean time of a block of calls. Not a test: numbers, not assertions.

    python benchmarks/bench_state.py                       # N = 64, C = 64 and 512, 2 threads
    python benchmarks/bench_state.py --channels 16 4096 --rounds 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce, state_kernels
from layerscope.stats.coverage import NeuronCoverage
from layerscope.stats.moments import ChannelMoments

PATHS = {"torch": "torch", "native": None}  # label → forced backend of the state update (None: auto)


def accumulators(c: int, backend: str | None) -> dict[str, Callable[[], object]]:
    ranges = (torch.full((c,), -1.0), torch.full((c,), 1.0))
    return {
        "coverage": lambda: NeuronCoverage(backend=backend),
        "coverage+ranges": lambda: NeuronCoverage(ranges=ranges, backend=backend),
        "moments": lambda: ChannelMoments((0.0,), backend=backend),
    }


def block_time(acc, view, reduced, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        acc.update(view, reduced)
    return (time.perf_counter() - t0) / calls


def measure(n: int, c: int, rounds: int, calls: int) -> dict[tuple[str, str], float]:
    x = torch.randn(n, c, 16)
    view = make_view(x, Layout(1, Axis.TIME))
    reduced = channel_reduce(view, (0.0,))
    accs = {(stat, label): make() for label, backend in PATHS.items()
            for stat, make in accumulators(c, backend).items()}
    for acc in accs.values():  # first update allocates the state: not timed
        acc.update(view, reduced)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in accs}
    with torch.inference_mode():
        for _ in range(rounds):
            for key, acc in accs.items():  # interleaved: drift hits every variant alike
                times[key].append(block_time(acc, view, reduced, calls))
    return {key: statistics.median(ts) for key, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=20, help="calls per timed block")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if state_kernels(torch.device("cpu")) is None:
        raise SystemExit("layerscope._C is not built: there is no native state update to compare")
    print(f"per-update time (µs), N = {args.batch}, {args.threads} threads, median of {args.rounds} rounds "
          f"× {args.calls} calls")
    print(f"{'statistic':<17}{'C':>6}{'torch':>10}{'native':>10}{'× faster':>10}")
    for c in args.channels:
        med = measure(args.batch, c, args.rounds, args.calls)
        for stat in accumulators(c, None):
            t, nat = med[(stat, "torch")], med[(stat, "native")]
            print(f"{stat:<17}{c:>6}{t * 1e6:>10.1f}{nat * 1e6:>10.1f}{t / nat:>10.1f}")


if __name__ == "__main__":
    main()
