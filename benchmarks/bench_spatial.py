"""Cost of the spatial statistics and of the ζ (Taylor impact) pass, measured in one run.

    python benchmarks/bench_spatial.py [--repeats 5] [--threads 1] [--resnet-batches 3]

Prints, on the digits demo (test split, batches of 64) and on ResNet-18 with the CIFAR stem (random
32×32 inputs, batches of 32):

- the probe-pass time (every leaf layer, inference mode) of plain inference, ``moments`` only,
  ``moments + spatial``, ``moments + covariance`` and all four spatial statistics, as medians over
  interleaved repeats and ratios to the moments-only pass;
- the time of one impact pass (forward + backward per batch with the Probe collecting ``impact``) as
  a multiple of a plain forward + backward of the same loss over the same batches;
- the one-off analysis time (``probe.result()``);
- on digits, the peak RSS after 10 and after 100 batches of a moments + spatial + covariance pass.

Not a test: numbers, not assertions.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from torch import nn

from layerscope._analyze import eval_mode
from layerscope._impact import default_loss, impact_pass
from layerscope._probe import Probe
from layerscope.zoo import build
from layerscope.zoo.digits import digits_data, trained_digits_cnn

BASE = ("moments",)
VARIANTS = {
    "moments+spatial": ("moments", "spatial"),
    "moments+covariance": ("moments", "covariance"),
    "moments+spatial+covariance+connectivity": ("moments", "spatial", "covariance", "connectivity"),
}
SPATIAL = VARIANTS["moments+spatial+covariance+connectivity"]
Labelled = list[tuple[torch.Tensor, torch.Tensor]]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def probe_pass(model: nn.Module, batches: list[torch.Tensor], stats: tuple[str, ...]) -> tuple[float, float]:
    """(pass seconds, analysis seconds) for one streaming pass over ``batches``."""
    start = time.perf_counter()
    with torch.inference_mode(), Probe(model, stats=stats) as probe:
        for x in batches:
            model(x)
    mid = time.perf_counter()
    probe.result()
    return mid - start, time.perf_counter() - mid


def forward_backward(model: nn.Module, batches: Labelled) -> float:
    """A plain forward + backward of the impact pass's loss (gradients taken, then dropped)."""
    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    with eval_mode(model):
        for x, y in batches:
            torch.autograd.grad(default_loss(model(x), y).sum(), params)
    return time.perf_counter() - start


def impact_time(model: nn.Module, batches: Labelled) -> float:
    start = time.perf_counter()
    impact_pass(model, batches)
    return time.perf_counter() - start


def plain_pass(model: nn.Module, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model(x)
    return time.perf_counter() - start


def measure(name: str, model: nn.Module, labelled: Labelled, repeats: int) -> None:
    inputs = [x for x, _ in labelled]
    probe_pass(model, inputs, SPATIAL)  # warm-up: first-call costs, caches
    impact_time(model, labelled)
    times: dict[str, list[float]] = {"plain": [], "moments": [], **{k: [] for k in VARIANTS}}
    impact, analysis = [], []
    for _ in range(repeats):  # interleaved, so that drift hits every variant alike
        times["plain"].append(plain_pass(model, inputs))
        times["moments"].append(probe_pass(model, inputs, BASE)[0])
        for label, stats in VARIANTS.items():
            seconds, spent = probe_pass(model, inputs, stats)
            times[label].append(seconds)
        analysis.append(spent)
        fb = forward_backward(model, labelled)
        impact.append(impact_time(model, labelled) / fb)
    n = sum(len(x) for x in inputs)
    base = statistics.median(times["moments"])
    print(f"\n{name}: {len(inputs)} batches, {n} samples, {repeats} interleaved repeats (medians)")
    for label, ts in times.items():
        med = statistics.median(ts)
        print(f"  {label:42s} {med * 1e3:9.1f} ms   ratio to moments-only {med / base:5.2f}x")
    spent = statistics.median(analysis) * 1e3
    print(f"  {'analysis (probe.result) of the last variant':42s} {spent:9.1f} ms")
    print(f"  {'impact pass / plain forward+backward':42s} {statistics.median(impact):9.2f}x")


def memory(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Peak RSS after 10 and after 100 batches of one moments + spatial + covariance pass."""
    rss = {}
    with torch.inference_mode(), Probe(model, stats=SPATIAL):
        for i in range(100):
            model(batches[i % len(batches)])
            if i + 1 in (10, 100):
                rss[i + 1] = peak_rss_mib()
    growth = (rss[100] / rss[10] - 1) * 100
    print(f"\ndigits peak RSS: after 10 batches {rss[10]:.1f} MiB, after 100 {rss[100]:.1f} MiB "
          f"({growth:+.2f}%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on shared cores)")
    ap.add_argument("--resnet-batches", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads")

    model = trained_digits_cnn()
    _, _, x_test, y_test = digits_data()
    labelled = list(zip(x_test.split(64), y_test.split(64), strict=True))
    memory(model, [x for x, _ in labelled])  # first: peak RSS is a process-wide high-water mark
    measure("digits CNN", model, labelled, args.repeats)

    resnet = build("resnet18-cifar").eval()
    data = [(torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))) for _ in range(args.resnet_batches)]
    measure("ResNet-18 (CIFAR stem)", resnet, data, max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
