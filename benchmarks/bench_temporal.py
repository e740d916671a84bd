"""Cost of the temporal statistics on the built-in sequence demo, measured in one run.

    python benchmarks/bench_temporal.py [--repeats 15] [--batch-size 64] [--threads N]

Prints the probe-pass time (all leaf layers, inference mode) with ``moments`` only and with
``moments + spectrum`` (and, when those accumulators are registered, with the spatial statistics
too), as ratios to the moments-only pass, interleaved so that drift hits every variant alike; then
the peak RSS after 10 and after 100 batches of a moments + spectrum pass (memory must stay flat).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import psutil
import torch

from layerscope._probe import Probe
from layerscope.stats import ACCUMULATORS
from layerscope.zoo.sequence import make_signals, sequence_data, trained_sequence_cnn

SPATIAL = ("spatial", "covariance")  # the other modality's streaming statistics (no backward needed)


def probe_pass(model: torch.nn.Module, batches: list[torch.Tensor], variant: tuple[tuple[str, ...], dict],
               analysis: list[float] | None = None) -> float:
    """Seconds for one streaming pass over ``batches`` under a Probe gathering ``stats`` (the one-off
    analysis in ``probe.result()`` is timed apart, into ``analysis``)."""
    stats, options = variant
    start = time.perf_counter()
    with torch.inference_mode(), Probe(model, stats=stats, **options) as probe:
        for x in batches:
            model(x)
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    probe.result()
    if analysis is not None:
        analysis.append(time.perf_counter() - start)
    return elapsed


def plain_pass(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model(x)
    return time.perf_counter() - start


def time_variants(model, batches, variants: dict[str, tuple[tuple[str, ...], dict]],
                  repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    times: dict[str, list[float]] = {"plain": [], **{name: [] for name in variants}}
    analysis: dict[str, list[float]] = {name: [] for name in variants}
    for variant in variants.values():  # warm-up: first-call costs, caches
        probe_pass(model, batches, variant)
    for _ in range(repeats):
        times["plain"].append(plain_pass(model, batches))
        for name, stats in variants.items():
            times[name].append(probe_pass(model, batches, stats, analysis[name]))
    return times, analysis


def peak_rss_mib() -> tuple[float, float]:
    """(current RSS by psutil, peak RSS of the process by getrusage) in MiB."""
    current = psutil.Process().memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    return current, peak


def memory_run(model: torch.nn.Module, batch_size: int,
               stats: tuple[str, ...]) -> dict[int, tuple[float, float]]:
    x, _ = make_signals(100 * batch_size, seed=123)
    marks, seen = {}, 0
    highest = 0.0
    with torch.inference_mode(), Probe(model, stats=stats, stream_spectrum=True) as probe:
        for xb in x.split(batch_size):
            model(xb)
            seen += 1
            current, peak = peak_rss_mib()
            highest = max(highest, current)
            if seen in (10, 100):
                marks[seen] = (highest, peak)
    probe.result()
    return marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=32, help="batches per timed pass (the test split, cycled)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--spectrum-samples", type=int, default=None,
                    help="spectrum_samples of the main variant (default: the accumulator's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = trained_sequence_cnn()
    _, _, x_test, _ = sequence_data()
    split = list(x_test.split(args.batch_size))
    batches = [split[i % len(split)] for i in range(args.batches)]
    cap = {} if args.spectrum_samples is None else {"spectrum_samples": args.spectrum_samples}
    variants = {
        "moments": (("moments",), {}),
        "moments+spectrum": (("moments", "spectrum"), cap),
        "moments+spectrum (spectrum_samples=None)": (("moments", "spectrum"), {"spectrum_samples": None}),
    }
    spatial = tuple(s for s in SPATIAL if s in ACCUMULATORS)
    if spatial:
        variants["moments+spectrum+" + "+".join(spatial)] = (("moments", "spectrum", *spatial), {})
    times, analysis = time_variants(model, batches, variants, args.repeats)
    print(f"sequence demo: {len(batches)} batches of {args.batch_size} × (1, 128); torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {args.repeats} interleaved repeats")
    base_min, base_med = min(times["moments"]), statistics.median(times["moments"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:42s} min {min(ts) * 1e3:8.2f} ms  median {med * 1e3:8.2f} ms  "
              f"ratio to moments: min {min(ts) / base_min:5.3f}  median {med / base_med:5.3f}")
    print("one-off analysis (probe.result(), not part of the pass): " + ", ".join(
        f"{name} {statistics.median(ts) * 1e3:.1f} ms" for name, ts in analysis.items()))
    marks = memory_run(model, args.batch_size, ("moments", "spectrum"))
    (rss10, peak10), (rss100, peak100) = marks[10], marks[100]
    print(f"peak RSS (moments+spectrum, stream_spectrum=True): after 10 batches {rss10:.1f} MiB "
          f"(getrusage {peak10:.1f}), after 100 batches {rss100:.1f} MiB (getrusage {peak100:.1f}); "
          f"growth {100 * (rss100 / rss10 - 1):+.2f} %")


if __name__ == "__main__":
    main()
