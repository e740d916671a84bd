"""Cost of the temporal + spatial statistics on the built-in sequence demo, measured in one run.

    python benchmarks/bench_dualmodal.py [--repeats 9] [--threads N] [--batches 32]

The pass is the one ``layerscope analyze --model sequence-cnn`` runs: a :class:`Probe` on every leaf
layer, ``torch.inference_mode()``, batches of 64 of the test split (cycled). Prints, as medians over
interleaved repeats (drift hits every variant alike) and ratios to the moments-only pass:

- ``moments`` only (the baseline of the issue's ≤ 1.3× target);
- ``moments + spectrum`` (temporal);
- ``moments + spectrum + spatial + covariance + connectivity`` (temporal + spatial), with the default
  per-batch budgets (8 samples of each batch feed spectrum, spatial and covariance), and with spatial
  and covariance on every sample (``spatial_samples=covariance_samples=None``: their exact statistics,
  the defaults before those budgets existed);
- each of spectrum, spatial and covariance alone on top of moments (where the time goes);

then the cost of one update of each accumulator per layer-batch with the number of torch kernels it
dispatches (on this small model the per-kernel overhead, not the arithmetic, sets the floor; a native
call counts no kernel), with the probe's joint update of spectrum + spatial + covariance (one native
call per layer-batch, stats/_joint.py; the accumulators' own updates then run only on the batches it
declines) and without it (each accumulator's own path), the FLOPs of the covariance GEMMs, the Welch
sums of one layer-batch by the native call, by the torch kernels and ``torch.fft.rfft`` alone, and the
peak RSS
after 10 and after 100 batches of the full pass (memory must stay flat). Not a test: numbers, not
assertions.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections import Counter, defaultdict
from typing import Any

import psutil
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import layerscope._probe as probe_module
from layerscope._probe import Probe
from layerscope.kernels._native_accumulate import welch_parts_native
from layerscope.stats import ACCUMULATORS
from layerscope.stats._joint import JointUpdate
from layerscope.stats._periodogram import hann_window, welch_power_parts
from layerscope.stats._sampling import DEFAULT_SAMPLES
from layerscope.zoo.sequence import LENGTH, make_signals, sequence_data, trained_sequence_cnn

TEMPORAL = ("moments", "spectrum")
FULL = ("moments", "spectrum", "spatial", "covariance", "connectivity")
EXACT = {"spatial_samples": None, "covariance_samples": None}
VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "moments": (("moments",), {}),
    "moments+temporal": (TEMPORAL, {}),
    "moments+temporal+spatial (all)": (FULL, {}),
    "all, spatial+cov. every sample": (FULL, EXACT),
    "moments+spectrum only": (("moments", "spectrum"), {}),
    "moments+spatial only": (("moments", "spatial"), {}),
    "moments+covariance only": (("moments", "covariance"), {}),
}


def probe_pass(model: torch.nn.Module, batches: list[torch.Tensor], stats: tuple[str, ...],
               options: dict[str, Any] | None = None) -> float:
    start = time.perf_counter()
    with torch.inference_mode(), Probe(model, stats=stats, **(options or {})):
        for x in batches:
            model(x)
    return time.perf_counter() - start


def plain_pass(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model(x)
    return time.perf_counter() - start


def time_variants(model, batches, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"plain inference": [], **{k: [] for k in VARIANTS}}
    for stats, options in VARIANTS.values():  # warm-up
        probe_pass(model, batches, stats, options)
    for _ in range(repeats):
        times["plain inference"].append(plain_pass(model, batches))
        for name, (stats, options) in VARIANTS.items():
            times[name].append(probe_pass(model, batches, stats, options))
    return times


class _KernelCount(TorchDispatchMode):
    """Counts the torch ops dispatched inside it that run a kernel (views and reshapes left out)."""

    VIEWS = frozenset({"view", "slice", "unfold", "transpose", "t", "unsqueeze", "expand", "as_strided",
                       "view_as_real", "select", "_reshape_alias", "permute", "detach", "alias", "reshape",
                       "numpy_T", "_unsafe_view"})

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in self.VIEWS:
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def kernels_per_update(model, batch) -> dict[tuple[str, tuple[int, ...]], int]:
    """Torch kernels one ``update`` dispatches, per accumulator and activation shape (a later batch)."""
    counts: dict[tuple[str, tuple[int, ...]], int] = Counter()
    originals = {stat: ACCUMULATORS.get(stat).update for stat in FULL[1:]}

    def counted(stat, f):
        def update(self, view, reduced):
            with _KernelCount() as mode:
                f(self, view, reduced)
            counts[(stat, tuple(view.data.shape))] = mode.kernels

        return update

    with torch.inference_mode(), Probe(model, stats=FULL):
        model(batch)  # the first update builds state: not the steady state
        try:
            for stat, f in originals.items():
                ACCUMULATORS.get(stat).update = counted(stat, f)
            model(batch)
        finally:
            for stat, f in originals.items():
                ACCUMULATORS.get(stat).update = f
    return counts


def update_costs(model, batches, joint: bool = True) -> dict[tuple[str, tuple[int, ...]], tuple[float, int]]:
    """Median µs of one ``update`` per accumulator and activation shape (the full pass, timed per call), and
    the number of calls per pass; with ``joint``, also of the joint native update of spectrum + spatial +
    covariance (stats/_joint.py) when it ran — the accumulators' own updates then only see the batches it
    declined (the first ones of each layer); ``joint=False`` plans none (each accumulator's own path)."""
    spent: dict[tuple[str, tuple[int, ...]], list[float]] = defaultdict(list)
    originals = {}
    run, plan = JointUpdate.run, probe_module.plan_joint

    def timed_run(self, view, reduced):
        start = time.perf_counter()
        done = run(self, view, reduced)
        if done:
            spent[("joint s+s+c", tuple(view.data.shape))].append(time.perf_counter() - start)
        return done

    JointUpdate.run = timed_run
    if not joint:
        probe_module.plan_joint = lambda accumulators, view: None
    for stat in FULL[1:]:
        cls = ACCUMULATORS.get(stat)
        originals[stat] = cls.update

        def timed(self, view, reduced, _f=cls.update, _s=stat):
            start = time.perf_counter()
            _f(self, view, reduced)
            spent[(_s, tuple(view.data.shape))].append(time.perf_counter() - start)

        cls.update = timed
    try:
        probe_pass(model, batches, FULL)
        spent.clear()
        probe_pass(model, batches, FULL)
    finally:
        for stat, f in originals.items():
            ACCUMULATORS.get(stat).update = f
        JointUpdate.run, probe_module.plan_joint = run, plan
    return {k: (statistics.median(v) * 1e6, len(v)) for k, v in spent.items()}


def _best_us(f, calls: int = 100, rounds: int = 7) -> tuple[float, float]:
    f()
    ts = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            f()
        ts.append((time.perf_counter() - start) / calls)
    return min(ts) * 1e6, statistics.median(ts) * 1e6


def welch_comparison() -> list[str]:
    """One layer-batch's Welch sums on the demo's shapes (8 samples used, L = 64, 3 segments): the native
    call, the torch kernels, and torch.fft's rfft alone (a floor for any torch path)."""
    lines = []
    for shape, channels_last in (((64, 16, 128), False), ((64, 128, 32), True)):
        x = torch.randn(*shape)[::8]
        c = shape[2] if channels_last else shape[1]
        window = hann_window(64, x.dtype)
        out = torch.zeros(c, 33, 2, dtype=torch.float64)
        segs = torch.randn(x.shape[0] * 3 * c, 64)
        cases = [("torch kernels", lambda x=x, w=window, cl=channels_last: welch_power_parts(x, 64, w, cl)),
                 ("torch.fft.rfft alone", lambda segs=segs: torch.fft.rfft(segs))]
        if welch_parts_native(x, 64, window, channels_last, out):
            cases.insert(0, ("native call", lambda x=x, w=window, cl=channels_last, out=out: welch_parts_native(
                x, 64, w, cl, out)))
        for name, f in cases:
            best, med = _best_us(f)
            lines.append(f"Welch sums {tuple(x.shape)}{' channels last' if channels_last else ''}, {name}: "
                         f"min {best:.1f} µs, median {med:.1f} µs")
    return lines


def memory_run(model: torch.nn.Module, batch_size: int) -> dict[int, tuple[float, float]]:
    """(highest current RSS, getrusage peak) in MiB after 10 and 100 batches of the full pass."""
    x, _ = make_signals(100 * batch_size, seed=123)
    marks, highest = {}, 0.0
    with torch.inference_mode(), Probe(model, stats=FULL, stream_spectrum=True) as probe:
        for seen, xb in enumerate(x.split(batch_size), start=1):
            model(xb)
            highest = max(highest, psutil.Process().memory_info().rss / 2**20)
            if seen in (10, 100):
                marks[seen] = (highest, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10)
    probe.result()
    return marks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=32, help="batches per timed pass (the test split, cycled)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = trained_sequence_cnn()
    _, _, x_test, _ = sequence_data()
    split = list(x_test.split(args.batch_size))
    batches = [split[i % len(split)] for i in range(args.batches)]
    marks = memory_run(model, args.batch_size)  # first: getrusage's peak is a process-wide high-water mark

    times = time_variants(model, batches, args.repeats)
    print(f"sequence demo: {len(batches)} batches of {args.batch_size} × (1, 128), every leaf layer; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {args.repeats} interleaved repeats")
    base = statistics.median(times["moments"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:34s} median {med * 1e3:8.2f} ms  min {min(ts) * 1e3:8.2f} ms  "
              f"ratio to moments {med / base:5.3f}")
    kernels = kernels_per_update(model, batches[0])
    for joint in (True, False):
        print("one update per layer-batch (µs, median over the full pass; calls per pass; torch kernels it "
              f"dispatches), {'with' if joint else 'without'} the joint update of spectrum + spatial + covariance:")
        costs = update_costs(model, batches, joint)
        for (stat, shape), (us, calls) in sorted(costs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            print(f"  {stat:12s} {shape!s:16s} {us:8.1f}  {calls:4d} calls  {kernels.get((stat, shape), 0):3d} kernels")
    per_batch = base / len(batches)
    layers = ((16,),) * 4 + ((32,),) * 2 + ((8,),)  # channels of the 7 layers; 128 positions but the head's 1
    rows = [(args.batch_size, LENGTH)] * 6 + [(args.batch_size, 1)]
    exact = sum(2 * c * c * n * t for (c,), (n, t) in zip(layers, rows, strict=True))
    used = sum(2 * c * c * min(n, DEFAULT_SAMPLES) * t for (c,), (n, t) in zip(layers, rows, strict=True))
    print(f"covariance GEMMs: {used / 1e6:.1f} MFLOP per batch with covariance_samples={DEFAULT_SAMPLES} "
          f"({exact / 1e6:.0f} MFLOP with every row, C²·N·T per layer), vs {per_batch * 1e3:.2f} ms per "
          "moments-only batch")
    for line in welch_comparison():
        print("  " + line)
    (rss10, peak10), (rss100, peak100) = marks[10], marks[100]
    print(f"peak RSS (full pass, stream_spectrum=True): after 10 batches {rss10:.1f} MiB (getrusage "
          f"{peak10:.1f}), after 100 batches {rss100:.1f} MiB (getrusage {peak100:.1f}); growth "
          f"{100 * (rss100 / rss10 - 1):+.2f} %")


if __name__ == "__main__":
    main()
