"""Batched periodograms for the ``spectrum`` accumulator: Welch sums over time segments and ring sums
of the 2-D periodogram of images. Pure functions of one batch; the definitions (and their sources)
are in the docstring of :mod:`layerscope.stats.spectrum`.
"""

from __future__ import annotations

from typing import Any

import torch

from ._scratch import Scratch

RING_TOLERANCE = 1e-9


def hann_window(length: int, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
    """The periodic Hann window of ``scipy.signal.get_window('hann', length)``."""
    return torch.hann_window(length, periodic=True, dtype=dtype, device=device)


def onesided_scale(length: int, fs: float) -> torch.Tensor:
    """Per-bin factor turning Σ|X|²/segments into a one-sided density (``scipy.signal.welch``)."""
    scale = torch.full((length // 2 + 1,), 2.0, dtype=torch.float64)
    scale[0] = 1.0
    if length % 2 == 0:
        scale[-1] = 1.0
    return scale / (fs * float(hann_window(length).square().sum()))


def real_fft(x: torch.Tensor, dims: int) -> torch.Tensor:
    """``rfft`` (``dims=1``) or ``rfft2`` (``dims=2``) over the last axes, with ``torch.fft`` on every
    device.

    (An earlier version sent CPU transforms to SciPy's single-threaded pocketfft when torch had more
    than one thread, after torch's FFT stalled on a contended machine. Measured again on a quiet
    2-core machine, ``torch.fft`` takes the same time with 1 and 2 threads and about half SciPy's on
    the Welch shapes of the sequence demo — ``benchmarks/bench_dualmodal.py`` times both.)
    """
    return torch.fft.rfftn(x, dim=tuple(range(-dims, 0)))


def welch_power_parts(x: torch.Tensor, length: int, window: torch.Tensor, channels_last: bool = False,
                      scratch: Scratch | None = None) -> tuple[torch.Tensor, int]:
    """``Σ (Re X)²`` and ``Σ (Im X)²``, ``X = rfft(w · (seg − mean(seg)))``, over all segments of all
    samples: ``[C, L//2+1, 2]`` (their sum over the last axis is the power; keeping the parts apart saves
    that sum per batch).

    ``x`` is ``[N, C, T]`` (or ``[N, T, C]`` when ``channels_last``); also returns the number of
    segments per channel. One rfft over every segment of every channel; the sums are in ``x``'s
    dtype (the caller adds them to float64 state). The segment sums, the detrended copy into
    ``scratch`` (in the layout the FFT wants), the window, the rfft, the squares, and one sum over the
    leading (segment) axis of the contiguous spectrum.
    """
    hop = length - length // 2
    if channels_last:
        segs = x.unfold(1, length, hop)  # (N, T, C) -> (N, K, C, L), a view
    else:
        segs = x.unfold(2, length, hop).transpose(1, 2)  # (N, C, T) -> (N, C, K, L) -> (N, K, C, L)
    n, k, c, _ = segs.shape
    out = (scratch if scratch is not None else Scratch()).get((n, k, c, length), x.dtype, x.device)
    # detrend='constant': seg − Σseg/L, written contiguous; then the window, in place
    windowed = torch.sub(segs, segs.sum(-1, keepdim=True), alpha=1.0 / length, out=out).mul_(window)
    spec = torch.view_as_real(real_fft(windowed, 1))  # (N, K, C, F, 2): re, im
    return spec.square_().view(n * k, -1).sum(0).view(c, -1, 2), n * k


def welch_power_sum(x: torch.Tensor, length: int, window: torch.Tensor, channels_last: bool = False,
                    scratch: Scratch | None = None) -> tuple[torch.Tensor, int]:
    """``Σ |rfft(w · (seg − mean(seg)))|²`` over all segments of all samples: ``[C, L//2+1]``, and the
    number of segments per channel (see :func:`welch_power_parts`)."""
    parts, segments = welch_power_parts(x, length, window, channels_last, scratch)
    return parts.sum(-1), segments


def radial_bins(shape: tuple[int, int], device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ring-membership matrix ``[H·(W//2+1)·2, J+1]`` for ``view_as_real(rfft2(·))`` powers, and the
    ring sizes ``[J+1]``.

    Entry (2p + i, j) (i: real/imaginary part of half-plane frequency p) is the multiplicity of p in
    the full plane (1 for the columns that are their own mirror image — ``k_x = 0`` and, for even W,
    ``k_x = W/2`` — else 2) when p lies in ring j, else 0. The DC frequency's rows are 0: removing
    the mean zeroes it, so it is left out of the sums (and still counted in ring 0's size).
    """
    h, w = shape
    delta = 1.0 / min(h, w)
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]  # (H, 1)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]  # (1, W//2+1)
    # ring j = ⌊r/Δ + ½⌋; the tolerance puts a frequency exactly on a border in the outer ring whatever
    # the rounding of r/Δ (a non-border r/Δ is farther than 1e-9 from a half-integer for any H, W ≤ 10⁴)
    ring = torch.floor(torch.sqrt(fy * fy + fx * fx) / delta + 0.5 + RING_TOLERANCE).to(torch.int64).flatten()
    mult = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64)
    mult[0] = 1.0
    if w % 2 == 0:
        mult[-1] = 1.0
    mult = mult.expand(h, -1).flatten()
    n_rings = min(h, w) // 2 + 1
    inside = ring < n_rings
    members = torch.zeros(ring.numel(), n_rings, dtype=torch.float64)
    members[inside.nonzero().squeeze(1), ring[inside]] = mult[inside]
    sizes = members.sum(dim=0)
    members[0] = 0.0  # the DC frequency (p = 0)
    return members.repeat_interleave(2, dim=0).to(device), sizes.to(device)


def radial_power_sum(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Σ over samples of the ring sums of ``|FFT2(x − mean)|² / (H·W)``: ``[C, J+1]`` float64.

    ``x`` is ``[N, C, H, W]``; ``bins`` comes from :func:`radial_bins` (which drops the DC term: the
    mean only changes that one coefficient, so it needs no subtraction).
    """
    _, c, h, w = x.shape
    spec = real_fft(x, 2)  # (N, C, H, W//2+1) complex
    power = torch.view_as_real(spec).square_().sum(dim=0)  # (C, H, Wr, 2)
    return (power.reshape(c, -1).to(torch.float64) @ bins) / (h * w)  # (C, J+1)
