"""Histograms: argument checks and the torch references.

``histogram``: equal bins over ``[lo, hi]`` defined by float64 edges (``numpy.histogram``'s convention
for equal bins): every backend computes the same edges and compares against them, so a value on an
edge lands in the same bin everywhere, whatever the rounding of ``(x − lo)·bins/(hi − lo)``.

``histogram_pow2``: bins of width ``w = 2**e`` with edges at integer multiples of ``w`` (the grid of
``stats.histogram``). The bin of ``x`` is ``floor(x · 2**−e)``, exact in binary floating point because
the scaling is by a power of two (a negative value whose quotient underflows to −0 is in bin −1), so no
edge comparison is needed.
"""

from __future__ import annotations

import math

import torch

from .._errors import ConfigError

POW2_MIN_EXPONENT, POW2_MAX_EXPONENT = -1022, 1023  # 2**e and 2**-e are float64 numbers
POW2_MAX_INDEX = 2**53  # |j0| + bins: every bin index of the window is an exact float64 integer


def check_histogram_args(bins: int, lo: float, hi: float) -> tuple[int, float, float]:
    """``(bins, lo, hi)`` as ``(int, float, float)``, or a ConfigError saying what is wrong."""
    if int(bins) != bins or int(bins) < 1:
        raise ConfigError(f"histogram bins must be a positive integer, got {bins!r}")
    lo, hi = float(lo), float(hi)
    if not (lo < hi and math.isfinite(hi - lo)):
        raise ConfigError(f"histogram range must be finite with lo < hi, got [{lo}, {hi}]")
    return int(bins), lo, hi


def histogram_edges(bins: int, lo: float, hi: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """float64 ``[bins + 1]``: ``lo + j·((hi − lo)/bins)``, the last one exactly ``hi``."""
    step = (hi - lo) / bins
    edges = torch.arange(bins + 1, dtype=torch.float64, device=device) * step + lo
    edges[-1] = hi
    return edges


def dense_flat(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a 1-D tensor over its own memory when it is dense in some dim order (no copy), else a
    contiguous copy. A histogram does not depend on the order of the values."""
    if x.is_contiguous():
        return x.reshape(-1)
    order = sorted(range(x.dim()), key=lambda d: x.stride(d), reverse=True)
    permuted = x.permute(order)
    return permuted.reshape(-1) if permuted.is_contiguous() else x.reshape(-1)


def histogram_torch(x: torch.Tensor, bins: int, lo: float, hi: float) -> torch.Tensor:
    """Reference: ``bucketize`` against the float64 edges, then ``bincount`` (several passes)."""
    v = x.reshape(-1).to(torch.float64)  # exact for every floating dtype
    edges = histogram_edges(bins, lo, hi, v.device)
    inside = (v >= lo) & (v <= hi)  # NaN and ±Inf fail one of the two
    # right=True: idx with edges[idx−1] <= v < edges[idx]; v == hi → bins + 1, folded into the last bin
    j = (torch.bucketize(v[inside], edges, right=True) - 1).clamp_(max=bins - 1)
    return torch.bincount(j, minlength=bins)


def check_pow2_args(exponent: int, offset: int, bins: int) -> tuple[int, int, int]:
    """``(exponent, offset, bins)`` as ints, or a ConfigError saying what is wrong."""
    if int(bins) != bins or int(bins) < 1:
        raise ConfigError(f"histogram bins must be a positive integer, got {bins!r}")
    if int(exponent) != exponent or not POW2_MIN_EXPONENT <= int(exponent) <= POW2_MAX_EXPONENT:
        raise ConfigError(
            f"histogram_pow2 exponent must be an integer in [{POW2_MIN_EXPONENT}, {POW2_MAX_EXPONENT}], "
            f"got {exponent!r}"
        )
    if int(offset) != offset or abs(int(offset)) + int(bins) > POW2_MAX_INDEX:
        raise ConfigError(f"histogram_pow2 needs an integer offset with |offset| + bins ≤ 2**53, got {offset!r}")
    return int(exponent), int(offset), int(bins)


def histogram_pow2_torch(x: torch.Tensor, exponent: int, offset: int, bins: int) -> torch.Tensor:
    """Reference: ``floor(x · 2**−e)`` (exact: a power-of-two scaling), then ``bincount`` of the slots.

    In float32 when that is exact — as the native kernel does: the scale ``2**−e`` is a normal float32
    and every slot index is an exact float32 integer — else in float64. Slot ``q − (offset − 1)``
    clamped to ``[0, bins + 1]`` (exact inside the window; rounding is monotonic, so a value outside
    keeps its side) puts the values below the window in slot 0 and above it in slot ``bins + 1``, NaN
    in slot 0: one ``bincount`` of the narrowest integer type that holds the slots, no boolean
    compaction.
    """
    v = dense_flat(x)
    narrow = v.dtype in (torch.float16, torch.bfloat16, torch.float32)
    f32 = narrow and -126 <= exponent <= 126 and abs(offset) + bins + 2 <= 2**24
    v = v.to(torch.float32 if f32 else torch.float64)
    q = torch.mul(v, math.ldexp(1.0, -exponent)).floor_()  # overflow → ±inf, clamped below
    if exponent >= 1:  # only then can a nonzero value's quotient round to ±0: negative ones are in bin −1
        q = torch.where((q == 0) & (v < 0), -1.0, q)
    q = q.sub_(offset - 1).clamp_(0, bins + 1).nan_to_num_(nan=0.0)
    index = q.to(torch.uint8 if bins + 1 <= 255 else torch.int32 if bins + 1 < 2**31 else torch.int64)
    return torch.bincount(index, minlength=bins + 2)[1 : bins + 1].to(torch.int64)
