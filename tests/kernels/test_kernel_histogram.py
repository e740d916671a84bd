"""``kernels.histogram``: every backend against a brute-force float64 reference of the documented edges
(value on an edge → the bin that starts there; x == hi → last bin; outside, NaN, ±Inf → not counted)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerscope import ConfigError, kernels

from ._reference import needs_native


def reference_counts(x: torch.Tensor, bins: int, lo: float, hi: float) -> np.ndarray:
    """Per value: the last edge ≤ v among edge[j] = lo + j·((hi − lo)/bins), edge[bins] = hi (float64)."""
    step = (hi - lo) / bins
    edges = [lo + j * step for j in range(bins)] + [hi]
    counts = np.zeros(bins, dtype=np.int64)
    for v in x.detach().to(torch.float64).reshape(-1).tolist():
        if not (lo <= v <= hi):
            continue
        j = bins - 1
        while edges[j] > v:
            j -= 1
        counts[j] += 1
    return counts


def backends() -> list[str]:
    names = ["torch"]
    ok, _ = kernels.BACKENDS.get("native").available(torch.device("cpu"), torch.float32)
    return names + (["native"] if ok else [])


def adversarial(dtype: torch.dtype) -> torch.Tensor:
    lo, hi, bins = -2.0, 3.0, 7
    step = (hi - lo) / bins
    edges = [lo + j * step for j in range(bins)] + [hi]
    near = [math.nextafter(e, -math.inf) for e in edges] + [math.nextafter(e, math.inf) for e in edges]
    specials = [math.nan, math.inf, -math.inf, -1e30, 1e30, lo, hi, 0.0, -0.0]
    values = torch.tensor(edges + near + specials, dtype=torch.float64)
    return torch.cat([values, torch.randn(3001, dtype=torch.float64) * 2]).to(dtype)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_matches_brute_force_reference(backend, dtype):
    x = adversarial(dtype)
    got = kernels.histogram(x, 7, -2.0, 3.0, backend=backend)
    assert got.dtype == torch.int64 and got.shape == (7,)
    np.testing.assert_array_equal(got.numpy(), reference_counts(x, 7, -2.0, 3.0))


@pytest.mark.parametrize("backend", backends())
def test_edge_semantics(backend):
    x = torch.tensor(
        [0.0, 0.25, 0.5, 1.0, -0.0, 1.0000001, -1e-300, float("nan"), float("inf")], dtype=torch.float64
    )
    got = kernels.histogram(x, 4, 0.0, 1.0, backend=backend).tolist()
    # [0, .25): 0, -0 · [.25, .5): .25 · [.5, .75): .5 · [.75, 1]: 1 — the rest is outside or not finite
    assert got == [2, 1, 1, 1]


@pytest.mark.parametrize("backend", backends())
def test_power_of_two_grid_of_the_histogram_accumulator(backend):
    # stats.histogram's canonical grid: bins of width 2**e starting at j0·2**e; −1e-20 belongs to
    # bin floor(−1e-20) = −1, although (x − lo) rounds up to the next bin's edge.
    e, j0, bins = 0, -1, 4
    lo, hi = j0 * 2.0**e, (j0 + bins) * 2.0**e
    x = torch.tensor([-1e-20, -1.0, 0.0, 2.9999999999999996, 1.5], dtype=torch.float64)
    assert kernels.histogram(x, bins, lo, hi, backend=backend).tolist() == [2, 1, 1, 1]


@pytest.mark.parametrize("backend", backends())
def test_layouts_and_strides_do_not_matter(backend):
    x = torch.randn(4, 6, 5, 3)
    want = kernels.histogram(x.contiguous(), 11, -1.5, 1.5, backend="torch")
    for y in (x.permute(0, 3, 1, 2), x.to(memory_format=torch.channels_last), x[:, ::2], x.transpose(0, 3)):
        got = kernels.histogram(y, 11, -1.5, 1.5, backend=backend)
        np.testing.assert_array_equal(got.numpy(), reference_counts(y, 11, -1.5, 1.5))
    assert kernels.histogram(x, 11, -1.5, 1.5, backend=backend).tolist() == want.tolist()


@needs_native
def test_native_threads_agree_and_many_bins():
    x = torch.randn(200_000)
    old = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            runs.append(kernels.histogram(x, 1000, -4.0, 4.0, backend="native"))
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(r, runs[0]) for r in runs)
    assert torch.equal(runs[0], kernels.histogram(x, 1000, -4.0, 4.0, backend="torch"))
    assert runs[0].sum() == ((x >= -4) & (x <= 4)).sum()


def test_empty_input():
    assert kernels.histogram(torch.empty(0), 3, 0.0, 1.0).tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    "bins,lo,hi",
    [
        (0, 0.0, 1.0),
        (2.5, 0.0, 1.0),
        (4, 1.0, 1.0),
        (4, 2.0, 1.0),
        (4, 0.0, math.inf),
        (4, math.nan, 1.0),
        (4, -1e308, 1e308),
    ],
)
def test_bad_arguments_say_what_is_wrong(bins, lo, hi):
    with pytest.raises(ConfigError, match="histogram"):
        kernels.histogram(torch.zeros(3), bins, lo, hi)


@pytest.mark.parametrize("backend", backends())
def test_bins_narrower_than_float64_spacing(backend):
    # lo = 1e15: float64 values there are 0.125 apart, so 64 bins over [lo, lo + 1] have collapsed
    # (equal) edges; the rule "last edge ≤ x" still decides, identically in every backend.
    lo, hi = 1e15, 1e15 + 1.0
    x = torch.tensor([lo + 0.125 * k for k in range(9)], dtype=torch.float64)
    np.testing.assert_array_equal(
        kernels.histogram(x, 64, lo, hi, backend=backend).numpy(), reference_counts(x, 64, lo, hi)
    )
