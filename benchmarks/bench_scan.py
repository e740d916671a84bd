"""Linear scan h_t = a_t·h_{t−1} + b_t, forward + backward: native kernel vs a sequential torch loop.

At B=8, D=256, T=4096 (float32, time at dim 1), measured in ONE run, repeats interleaved, medians:

  native      — layerscope.ops.linear_scan(a, b, backend="native"), then torch.autograd.grad
  torch-chunk — the same with backend="torch" (the pure-torch fallback: a chunked scan, ~2·√T steps)
  sequential  — layerscope.ops.linear_scan_sequential: a Python loop over t, autograd for backward
  memcpy      — copying a and b into preallocated tensors (the bytes the scan must at least read)

Gradients are taken with torch.autograd.grad (no accumulation into .grad) for every variant.
Not a test: prints numbers, asserts nothing. Other processes on the machine make timings noisy.

    python benchmarks/bench_scan.py
    python benchmarks/bench_scan.py --threads 1 --T 1024
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from layerscope.ops import linear_scan, linear_scan_sequential


def medians(fns: dict[str, Callable[[], object]], repeats: dict[str, int]) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for i in range(max(repeats.values())):
        for name, f in fns.items():
            if i < repeats[name]:
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--D", type=int, default=256)
    parser.add_argument("--T", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=11, help="for the fast variants (sequential: 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (args.B, args.T, args.D)
    a = (0.5 + 0.5 * torch.rand(shape)).requires_grad_()
    b = torch.randn(shape, requires_grad=True)
    g = torch.randn(shape)
    dst_a, dst_b = torch.empty_like(a), torch.empty_like(b)

    def fwd_bwd(scan: Callable[..., torch.Tensor], **kw) -> Callable[[], object]:
        return lambda: torch.autograd.grad(scan(a, b, **kw), (a, b), g)

    fns = {
        "native fwd": lambda: linear_scan(a.detach(), b.detach(), backend="native"),
        "native fwd+bwd": fwd_bwd(linear_scan, backend="native"),
        "torch-chunk fwd+bwd": fwd_bwd(linear_scan, backend="torch"),
        "sequential fwd+bwd": fwd_bwd(linear_scan_sequential),
        "memcpy(a, b)": lambda: (dst_a.copy_(a.detach()), dst_b.copy_(b.detach())),
    }
    reps = {k: (3 if "sequential" in k else args.repeats) for k in fns}
    t = medians(fns, reps)
    print(f"B={args.B} T={args.T} D={args.D} float32, threads={args.threads}, medians of {reps}")
    for name, sec in t.items():
        print(f"  {name:<22} {sec * 1e3:9.2f} ms")
    nat = t["native fwd+bwd"]
    print(f"  sequential / native (fwd+bwd): {t['sequential fwd+bwd'] / nat:6.1f}x")
    print(f"  torch-chunk / native (fwd+bwd): {t['torch-chunk fwd+bwd'] / nat:6.1f}x")
    print(f"  native fwd+bwd / memcpy(a, b):  {nat / t['memcpy(a, b)']:6.1f}x")
    print(f"  native fwd / memcpy(a, b):      {t['native fwd'] / t['memcpy(a, b)']:6.1f}x")


if __name__ == "__main__":
    main()
