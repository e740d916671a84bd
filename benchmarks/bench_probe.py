"""Probe overhead and memory on a ResNet-18 (CIFAR stem), batch 64, 2 CPU threads.

Compares, in one run and on the same machine:
  plain   — inference alone;
  probe   — layerscope.Probe with every statistic of the probe issue on every layer;
  naive   — the pattern the probe replaces: keep every activation, reduce at the end.
Each run is its own process so that peak RSS figures do not mix; plain and probe runs alternate over
rounds, and the ratio is also taken per round (median per-batch times). Each probe run then times
adjacent batches in the same process, hooks detached then attached: the median of those per-batch
ratios compares like with like (same process, allocator state and cache history) and is the figure to
quote. Prints per-batch time ratios and peak RSS after 10 and after N batches. Not a test: numbers,
not assertions.

Allocator (``--malloc``): with glibc's default thresholds, plain inference in a fresh process returns
much of each batch's activation memory to the OS and faults it in again (1.44 M page faults in 22
batches, measured with ``perf stat``; with the thresholds raised, 0.12 M and a quarter less time),
while a process that has run the probe once pays 1.12 M (its heap keeps more of that memory mapped)
and is faster for it. ``--malloc default`` compares the two processes as they come, and that saving
hides most of the probe's cost; ``--malloc steady`` (the default) raises ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` in every worker, so that neither pays the page faults and the ratio is the
probe's own cost.

    python benchmarks/bench_probe.py                 # 3 rounds of 100 batches (naive: 10, it grows without bound)
    python benchmarks/bench_probe.py --batches 30 --rounds 5 --backend torch
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(mode: str, batches: int, batch_size: int, threads: int, backend: str | None) -> dict:
    import torch

    from layerscope._probe import Probe
    from layerscope.zoo import build

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build("resnet18-cifar").eval()
    x = torch.randn(batch_size, 3, 32, 32)
    kept: list = []
    hooks = []
    if mode == "naive":
        leaves = [m for m in model.modules() if next(m.children(), None) is None]
        hooks = [m.register_forward_hook(lambda m, i, o: kept.append(o.detach().clone())) for m in leaves]
    probe = Probe(model, stats=("moments", "coverage", "histogram"), backend=backend) if mode == "probe" else None
    times, rss = [], {}
    with torch.inference_mode():
        model(x)  # warm-up (not timed, not counted)
        if probe:
            probe.attach()
        for i in range(batches):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
            if i + 1 in (10, batches):
                rss[i + 1] = peak_rss_mib()
        if mode == "naive":  # the deferred reduction the naive pattern has to do at the end
            t0 = time.perf_counter()
            for t in kept:
                torch.var_mean(t, dim=0)
            times.append(time.perf_counter() - t0)
        if probe:
            probe.detach()
            probe.result()
    for h in hooks:
        h.remove()
    per_batch = sorted(times[:batches])
    if mode == "probe":  # batch-level pairs in this process: plain (hooks off) next to probe (hooks on)
        pairs = []
        with torch.inference_mode():
            for _ in range(batches):
                t0 = time.perf_counter()
                model(x)
                t1 = time.perf_counter()
                probe.attach()
                t2 = time.perf_counter()
                model(x)
                t3 = time.perf_counter()
                probe.detach()
                pairs.append((t3 - t2) / (t1 - t0))
        pairs.sort()
        return {"mode": mode, "seconds": sum(times), "batches": batches, "rss": rss,
                "median": per_batch[len(per_batch) // 2], "paired": pairs[len(pairs) // 2]}
    return {"mode": mode, "seconds": sum(times), "batches": batches, "rss": rss,
            "median": per_batch[len(per_batch) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--naive-batches", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="plain/probe pairs, alternated")
    ap.add_argument("--backend", default=None, help="force a kernel backend (torch, native)")
    ap.add_argument("--malloc", choices=("steady", "default"), default="steady",
                    help="glibc thresholds of the workers (see the module docstring)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        n = args.naive_batches if args.worker == "naive" else args.batches
        print(json.dumps(worker(args.worker, n, args.batch_size, args.threads, args.backend)))
        return
    results: dict[str, list[dict]] = {}

    def run(mode: str) -> None:
        cmd = [sys.executable, __file__, "--worker", mode, "--batches", str(args.batches),
               "--naive-batches", str(args.naive_batches), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads)] + (["--backend", args.backend] if args.backend else [])
        env = dict(os.environ)
        if args.malloc == "steady":  # no page-fault churn in either worker (see the module docstring)
            env.update(MALLOC_MMAP_THRESHOLD_=str(2**32), MALLOC_TRIM_THRESHOLD_=str(2**32))
        results.setdefault(mode, []).append(json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                                      text=True, env=env).stdout))

    for _ in range(args.rounds):  # plain and probe alternate: drift hits both alike
        run("plain")
        run("probe")
    run("naive")
    ratios = sorted(p["median"] / q["median"] for p, q in zip(results["probe"], results["plain"], strict=True))
    plain = min(r["median"] for r in results["plain"])
    print(f"ResNet-18 (CIFAR stem), batch {args.batch_size}, {args.threads} threads, backend {args.backend or 'auto'}, "
          f"{args.rounds} rounds of {args.batches} batches (per-batch medians), malloc {args.malloc}")
    print(f"{'mode':<8}{'s/batch':>10}{'× plain':>10}{'RSS@10 MiB':>13}{'RSS@N MiB':>12}{'N':>6}")
    for mode in ("plain", "probe", "naive"):
        r = min(results[mode], key=lambda r: r["median"])
        rss10, rss_n = r["rss"].get("10", float("nan")), r["rss"][str(r["batches"])]
        print(f"{mode:<8}{r['median']:>10.4f}{r['median'] / plain:>10.2f}{rss10:>13.0f}{rss_n:>12.0f}{r['batches']:>6}")
    print(f"probe / plain, paired by round: median {ratios[len(ratios) // 2]:.3f}, "
          f"all rounds {', '.join(f'{x:.3f}' for x in ratios)}")
    paired = sorted(r["paired"] for r in results["probe"])
    print(f"probe / plain, paired by batch (adjacent batches in one process, median per run): "
          f"median {paired[len(paired) // 2]:.3f}, all rounds {', '.join(f'{x:.3f}' for x in paired)}")
    probe = results["probe"][0]["rss"]
    growth = (probe[str(args.batches)] - probe["10"]) / probe["10"] if "10" in probe else float("nan")
    naive = results["naive"][0]["rss"]
    print(f"probe peak RSS after {args.batches} batches vs after 10: {growth:+.1%}")
    print(f"naive: {(naive[str(args.naive_batches)] - results['plain'][0]['rss']['10']) / args.naive_batches:.0f} MiB "
          "kept per batch (grows without bound)")


if __name__ == "__main__":
    main()
