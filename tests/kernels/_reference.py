"""Independent float64 NumPy references for the kernel tests, and shared markers."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from layerscope.kernels import ChannelStats
from layerscope.kernels._native import native_error

NATIVE_BUILT = not native_error()


def needs_native(test):
    """Mark a test as needing ``layerscope._C`` (``-m native`` selects them); skip when not built."""
    skip = pytest.mark.skipif(not NATIVE_BUILT, reason=f"native extension not built: {native_error()}")
    return pytest.mark.native(skip(test))


def as_float64(x: torch.Tensor) -> np.ndarray:
    """Exact float64 copy of any floating tensor (bf16/fp16/fp32 convert exactly)."""
    return x.detach().to(torch.float64).numpy()


def channel_stats_reference(x_nsc: np.ndarray, thresholds) -> dict[str, np.ndarray]:
    """ChannelStats of a float64 [N, S, C] array, by the contract's definitions (two-pass moments)."""
    fin = np.isfinite(x_nsc)
    xz = np.where(fin, x_nsc, 0.0)
    count = fin.sum(axis=(0, 1))
    mean = xz.sum(axis=(0, 1)) / np.maximum(count, 1)
    m2 = np.where(fin, (x_nsc - mean) ** 2, 0.0).sum(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        sample_mean = xz.sum(axis=1) / fin.sum(axis=1)
    c = x_nsc.shape[2]
    return {
        "count": count,
        "mean": mean,
        "m2": m2,
        "min": np.where(fin, x_nsc, np.inf).min(axis=(0, 1), initial=np.inf),
        "max": np.where(fin, x_nsc, -np.inf).max(axis=(0, 1), initial=-np.inf),
        "zeros": (x_nsc == 0).sum(axis=(0, 1)),
        "above": np.stack([(fin & (x_nsc > t)).sum(axis=(0, 1)) for t in thresholds])
        if len(thresholds)
        else np.zeros((0, c), dtype=np.int64),
        "nan": np.isnan(x_nsc).sum(axis=(0, 1)),
        "inf": np.isinf(x_nsc).sum(axis=(0, 1)),
        "sample_mean": sample_mean,
    }


COUNTS = ("count", "zeros", "above", "nan", "inf")


def assert_stats_close(got: ChannelStats, ref: dict[str, np.ndarray], rtol: float) -> None:
    """Counts and extremes exactly; mean within rtol·(|mean| + std); m2 and sample means within rtol."""
    for f in COUNTS:
        g = getattr(got, f)
        assert g.dtype == torch.int64, f
        np.testing.assert_array_equal(g.cpu().numpy(), ref[f], err_msg=f)
    for f in ("min", "max"):
        np.testing.assert_array_equal(getattr(got, f).cpu().numpy(), ref[f], err_msg=f)
    count = np.maximum(ref["count"], 1)
    std = np.sqrt(ref["m2"] / count)
    mean = got.mean.cpu().numpy()
    assert got.mean.dtype == got.m2.dtype == got.sample_mean.dtype == torch.float64
    assert np.all(np.abs(mean - ref["mean"]) <= rtol * (np.abs(ref["mean"]) + std) + 1e-300), "mean"
    np.testing.assert_allclose(got.m2.cpu().numpy(), ref["m2"], rtol=rtol, atol=1e-300, err_msg="m2")
    sm, rsm = got.sample_mean.cpu().numpy(), ref["sample_mean"]
    np.testing.assert_array_equal(np.isnan(sm), np.isnan(rsm), err_msg="sample_mean NaN pattern")
    ok = ~np.isnan(rsm)
    scale = np.abs(rsm[ok]) + np.broadcast_to(std, rsm.shape)[ok] + 1e-300
    assert np.all(np.abs(sm[ok] - rsm[ok]) <= rtol * scale), "sample_mean"


def exact_moments(values: np.ndarray) -> tuple[float, float]:
    """(mean, M2) of float64 values in exact rational arithmetic, rounded once at the end."""
    v = [Fraction(float(t)) for t in values.ravel()]
    mean = sum(v) / len(v)
    return float(mean), float(sum((t - mean) ** 2 for t in v))


def scan_reference(a: np.ndarray, b: np.ndarray, h0: np.ndarray | None) -> np.ndarray:
    """h_t = a_t·h_{t−1} + b_t along axis 1 of float64 [B, T, D] arrays, by a plain loop."""
    h = np.zeros_like(b[:, 0]) if h0 is None else h0.astype(np.float64).copy()
    out = np.empty_like(b, dtype=np.float64)
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out[:, t] = h
    return out


def scan_grads_reference(a, h, h0, grad_h):
    """Gradients of Σ grad_h·h by the adjoint recursion, a plain float64 loop (independent of autograd)."""
    bsz, t, d = a.shape
    g = np.zeros((bsz, d))
    ga, gb = np.empty((bsz, t, d)), np.empty((bsz, t, d))
    for i in range(t - 1, -1, -1):
        g = grad_h[:, i] + (a[:, i + 1] * g if i + 1 < t else 0.0)
        gb[:, i] = g
        prev = h[:, i - 1] if i > 0 else (h0 if h0 is not None else np.zeros((bsz, d)))
        ga[:, i] = g * prev
    gh0 = a[:, 0] * gb[:, 0] if h0 is not None else None
    return ga, gb, gh0
