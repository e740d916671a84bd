"""Overhead of ``layerscope.profile()`` on ResNet-18 (CIFAR stem), as a ratio to one plain
forward + backward, both measured in this run.

``profile(..., repeats=0)`` is everything except the repeated timing runs: parameter counts, one
instrumented step (FLOP counting under ``FlopCounterMode``, module hooks, saved-tensor hooks, RSS
sampling), gradient flow, and saving/restoring the model's state. The two are timed in alternation
(plain, profile, plain, profile, …) after one warm-up of each, so that drift falls on both; medians.

    python benchmarks/bench_profile.py [--batch-size 32] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from layerscope.cost import profile
from layerscope.zoo import build


def plain_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    out = model(x)
    out.backward(torch.ones_like(out))
    for p in model.parameters():
        p.grad = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build("resnet18-cifar").train()
    x = torch.randn(args.batch_size, 3, 32, 32)

    cpu_plain, cpu_prof = [], []

    def timed(fn, cpu: list[float]) -> float:
        # wall clock is what the user waits; process CPU time (all threads) is less disturbed by other
        # processes on a shared machine, so both are reported
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - start_cpu)
        return time.perf_counter() - start

    run_plain = lambda: plain_step(model, x)  # noqa: E731
    run_profile = lambda: profile(model, x, repeats=0)  # noqa: E731
    run_plain(), run_profile()  # warm-up: first-call costs (allocator, oneDNN primitives, imports)
    plain, prof = [], []
    for _ in range(args.rounds):
        plain.append(timed(run_plain, cpu_plain))
        prof.append(timed(run_profile, cpu_prof))
    p_med, q_med = statistics.median(plain), statistics.median(prof)
    print(f"ResNet-18 (CIFAR stem), batch {args.batch_size}, 3x32x32, train mode, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, {args.rounds} alternating rounds")
    print(f"plain forward+backward : median {p_med * 1e3:8.1f} ms  (all: "
          + ", ".join(f"{t * 1e3:.0f}" for t in plain) + ")")
    print(f"profile(repeats=0)     : median {q_med * 1e3:8.1f} ms  (all: "
          + ", ".join(f"{t * 1e3:.0f}" for t in prof) + ")")
    paired = statistics.median(q / p for p, q in zip(plain, prof, strict=True))
    print(f"overhead ratio         : {q_med / p_med:.2f}x of the medians, {paired:.2f}x median of per-round "
          f"ratios  (target <= 3x)")
    cpu_ratio = statistics.median(cpu_prof) / statistics.median(cpu_plain)
    print(f"process CPU time ratio : {cpu_ratio:.2f}x  (plain {statistics.median(cpu_plain) * 1e3:.0f} ms, "
          f"profile {statistics.median(cpu_prof) * 1e3:.0f} ms of CPU, medians)")


if __name__ == "__main__":
    main()
