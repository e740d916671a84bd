"""Triton kernels on CUDA: the fused channel reduction and the linear scan, against torch on the GPU.

The CUDA counterpart of bench_kernels.py and bench_scan.py, for a machine with a GPU. Measured in ONE
run, repeats interleaved, medians of CUDA-synchronised wall times:

  reduction, float32 activations of 1, 8 and 64 MiB in two layouts ([N, C, S] and [B, T, C]):
    triton   — kernels.channel_reduce(view, thresholds, backend="triton"): one read
    torch    — the same call with backend="torch" (the library's torch path on the GPU)
    ops      — the plain torch ops: var_mean, amin, amax, (x > t).sum per threshold
    memcpy   — dst.copy_(x) into a preallocated tensor (read + write of the same bytes)
  scan, B=8, D=256, T=4096 float32, forward + backward (torch.autograd.grad):
    triton   — layerscope.ops.linear_scan(a, b, backend="triton")
    torch    — the same with backend="torch" (a chunked scan in torch ops)
    memcpy   — copying a and b into preallocated tensors

Not a test: prints numbers, asserts nothing.

    python benchmarks/bench_triton.py                  # needs CUDA and triton
    python benchmarks/bench_triton.py --interpret      # a check of the script on CPU, through Triton's
                                                       # interpreter (tiny sizes; its times mean nothing)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--sizes", default="1,8,64", help="MiB, comma-separated")
    parser.add_argument("--interpret", action="store_true", help="run on CPU through TRITON_INTERPRET=1")
    args = parser.parse_args()
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: it reads the variable then

    import torch
    from bench_kernels import THRESHOLDS, torch_ops  # this script's directory: the same baseline ops

    from layerscope import kernels
    from layerscope.capture.layout import Axis, LayoutView
    from layerscope.ops import linear_scan

    device = torch.device("cpu" if args.interpret else "cuda")
    ok, why = kernels.BACKENDS.get("triton").available(device, torch.float32)
    if not ok:
        print(f"bench_triton: the Triton backend cannot run here: {why}", file=sys.stderr)
        return 2
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
        times: dict[str, list[float]] = {k: [] for k in fns}
        for f in fns.values():  # warm-up: compiles each kernel for these shapes
            f()
        sync()
        for _ in range(repeats):
            for name, f in fns.items():
                t0 = time.perf_counter()
                f()
                sync()
                times[name].append(time.perf_counter() - t0)
        return {k: statistics.median(v) for k, v in times.items()}

    if args.interpret:
        sizes_bytes = [64 * 2**10]  # the interpreter runs every program in Python: a check, not a benchmark
        args.repeats = 1
    else:
        sizes_bytes = [int(s) * 2**20 for s in args.sizes.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, Triton interpreter"
    print(f"{name}  repeats={args.repeats} (medians)")
    print(
        f"{'size':>8} {'layout':<12} {'triton':>9} {'torch':>9} {'ops':>9} {'memcpy':>9} │"
        f" {'torch/tri':>9} {'ops/tri':>8} {'tri/memcpy':>10}"
    )
    def reduction_times(shape: tuple[int, int, int], channels_last: bool) -> dict[str, float]:
        x = torch.randn(*shape, device=device)
        view = LayoutView(x, channels_last, Axis.TIME if channels_last else Axis.SPACE,
                          (shape[1 if channels_last else 2],))
        dims = (0, 1) if channels_last else (0, 2)
        dst = torch.empty_like(x)
        return medians({
            "triton": lambda: kernels.channel_reduce(view, THRESHOLDS, backend="triton"),
            "torch": lambda: kernels.channel_reduce(view, THRESHOLDS, backend="torch"),
            "ops": lambda: torch_ops(x, dims),
            "memcpy": lambda: dst.copy_(x),
        }, args.repeats)

    for nbytes in sizes_bytes:
        numel = nbytes // 4
        for channels_last in (False, True):
            shape = (8, numel // (8 * 1024), 1024) if channels_last else (64, 64, numel // (64 * 64))
            t = reduction_times(shape, channels_last)
            ms = {k: v * 1e3 for k, v in t.items()}
            layout = "[B,T,C] last" if channels_last else "[N,C,S] first"
            print(
                f"{nbytes / 2**20:>6.2f}Mi {layout:<12} {ms['triton']:>8.3f}m {ms['torch']:>8.3f}m {ms['ops']:>8.3f}m"
                f" {ms['memcpy']:>8.3f}m │ {t['torch'] / t['triton']:>8.1f}x {t['ops'] / t['triton']:>7.1f}x"
                f" {t['triton'] / t['memcpy']:>9.2f}x"
            )

    B, T, D = (2, 64, 16) if args.interpret else (8, 4096, 256)
    torch.manual_seed(0)
    a = (0.5 + 0.5 * torch.rand(B, T, D, device=device)).requires_grad_()
    b = torch.randn(B, T, D, device=device, requires_grad=True)
    g = torch.randn(B, T, D, device=device)
    dst_a, dst_b = torch.empty_like(a), torch.empty_like(b)

    def fwd_bwd(backend: str) -> Callable[[], object]:
        return lambda: torch.autograd.grad(linear_scan(a, b, backend=backend), (a, b), g)

    def copy_inputs() -> None:
        dst_a.copy_(a.detach())
        dst_b.copy_(b.detach())

    t = medians({"triton": fwd_bwd("triton"), "torch": fwd_bwd("torch"), "memcpy": copy_inputs}, args.repeats)
    print(f"\nscan B={B} T={T} D={D} float32, forward + backward")
    for k, v in t.items():
        print(f"  {k:<8} {v * 1e3:9.3f} ms")
    print(f"  torch / triton: {t['torch'] / t['triton']:.1f}x", end="   ")
    print(f"triton / memcpy(a, b): {t['triton'] / t['memcpy']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
