"""ChannelSpectrum vs independent references: scipy.signal.welch, a brute-force NumPy ring loop."""

from fractions import Fraction

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from layerscope.capture.layout import Axis, Layout, make_view
from layerscope.kernels import channel_reduce
from layerscope.kernels._native_accumulate import welch_parts_native
from layerscope.stats import ACCUMULATORS
from layerscope.stats.spectrum import ChannelSpectrum

CHANNELS_FIRST_TIME = Layout(1, Axis.TIME)


def feed(acc, x, layout=CHANNELS_FIRST_TIME):
    view = make_view(x, layout)
    acc.update(view, channel_reduce(view, acc.thresholds, "torch"))


def welch_reference(x: np.ndarray, nperseg: int, axis: int, fs: float = 1.0):
    """Mean over samples of scipy's Welch PSD (defaults: hann, 50 % overlap, constant detrend)."""
    f, p = scipy.signal.welch(x, fs=fs, nperseg=nperseg, axis=axis)
    p = p.mean(axis=0)  # over samples
    return f, (p.T if axis == 1 else p)  # (C, F)


def batches(seed, shapes, dtype=torch.float64, offset=0.0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen, dtype=dtype) + offset for s in shapes]


def test_registered():
    assert ACCUMULATORS.get("spectrum") is ChannelSpectrum


@pytest.mark.parametrize("nperseg", [16, 33, 64, 500])
def test_welch_channels_first_matches_scipy(nperseg):
    xs = batches(0, [(5, 3, 100)] * 4, offset=2.0)  # (N, C, T), with a mean to detrend
    acc = ChannelSpectrum(nperseg=nperseg, fs=2.0, spectrum_samples=None)
    for x in xs:
        feed(acc, x)
    f, ref = welch_reference(torch.cat(xs).numpy(), min(nperseg, 100), axis=2, fs=2.0)
    np.testing.assert_allclose(acc.frequencies().numpy(), f, rtol=1e-15)
    np.testing.assert_allclose(acc.psd().numpy(), ref, rtol=1e-10, atol=1e-14)
    length = min(nperseg, 100)
    assert acc.segments.tolist() == [20 * ((100 - length) // (length - length // 2) + 1)] * 3


def test_welch_channels_last_matches_scipy():
    xs = batches(1, [(4, 90, 6), (7, 90, 6), (1, 90, 6)])  # (N, T, C), e.g. a Linear over a sequence
    acc = ChannelSpectrum(nperseg=32)
    for x in xs:
        feed(acc, x, Layout(-1, Axis.TIME))
    _, ref = welch_reference(torch.cat(xs).numpy(), 32, axis=1)
    np.testing.assert_allclose(acc.psd().numpy(), ref, rtol=1e-10, atol=1e-14)


NATIVE_WELCH = welch_parts_native(torch.zeros(1, 1, 8), 8, torch.ones(8), False,
                                  torch.zeros(1, 5, 2, dtype=torch.float64))


@pytest.mark.parametrize("backend", ["torch", None])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nperseg", [8, 64, 128, 48])  # 48: not a power of two (the torch code in any case)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [6, 20])  # the native kernel: lanes are segments, or channels
def test_welch_paths_match_scipy(backend, dtype, nperseg, channels_last, channels):
    # the sequence demo's shapes: 8 of 64 samples used, strided views of (N, C, T) and (N, T, C)
    xs = batches(30, [(64, channels, 128), (64, channels, 128), (13, channels, 128)], dtype=dtype, offset=3.0)
    acc = ChannelSpectrum(nperseg=nperseg, backend=backend)
    for x in xs:
        if channels_last:
            feed(acc, x.transpose(1, 2).contiguous(), Layout(-1, Axis.TIME))
        else:
            feed(acc, x)
    used = torch.cat([x[:: -(-x.shape[0] // 8)] for x in xs]).double().numpy()  # x[::⌈N/8⌉]
    _, ref = welch_reference(used, nperseg, axis=2)
    tol = dict(rtol=1e-10, atol=1e-13 * ref.max()) if dtype == torch.float64 else dict(rtol=2e-4, atol=1e-5 * ref.max())
    np.testing.assert_allclose(acc.psd().numpy(), ref, **tol)


@pytest.mark.skipif(not NATIVE_WELCH, reason="layerscope._C not built (the torch path is tested everywhere)")
def test_native_welch_kernel_is_used_and_matches_scipy_directly():
    x = torch.randn(5, 4, 96, dtype=torch.float64) - 7.0
    out = torch.zeros(4, 17, 2, dtype=torch.float64)
    assert welch_parts_native(x, 32, torch.hann_window(32, periodic=True, dtype=torch.float64), False, out)
    _, ref = scipy.signal.welch(x.numpy(), nperseg=32, axis=2, scaling="spectrum", detrend="constant")
    segments = 5 * ((96 - 32) // 16 + 1)
    # scaling="spectrum": |X|² / (Σw)², one-sided (×2 but DC and Nyquist); mean over samples and segments
    scale = np.full(17, 2.0)
    scale[[0, -1]] = 1.0
    power = out.sum(-1).numpy() * scale / (float(torch.hann_window(32, periodic=True, dtype=torch.float64).sum()) ** 2)
    np.testing.assert_allclose(power / segments, ref.mean(0), rtol=1e-10, atol=1e-14)
    assert not welch_parts_native(x, 24, torch.ones(24, dtype=torch.float64), False, out)  # not a power of two


def test_float32_within_float32_precision():
    xs = batches(2, [(8, 4, 128)] * 3, dtype=torch.float32, offset=5.0)
    acc = ChannelSpectrum(nperseg=64)
    for x in xs:
        feed(acc, x)
    _, ref = welch_reference(torch.cat(xs).double().numpy(), 64, axis=2)
    np.testing.assert_allclose(acc.psd().numpy(), ref, rtol=2e-4, atol=1e-5 * ref.max())


@pytest.mark.parametrize("cap", [16, 7, 40, None])
def test_samples_per_batch_are_evenly_spaced(cap):
    xs = batches(20, [(40, 2, 64), (9, 2, 64)])
    acc = ChannelSpectrum(nperseg=32, spectrum_samples=cap)
    for x in xs:
        feed(acc, x)
    used = [x[:: -(-x.shape[0] // cap)] if cap and x.shape[0] > cap else x for x in xs]
    assert [u.shape[0] for u in used] == {16: [14, 9], 7: [7, 5], 40: [40, 9], None: [40, 9]}[cap]
    _, ref = welch_reference(torch.cat(used).numpy(), 32, axis=2)
    np.testing.assert_allclose(acc.psd().numpy(), ref, rtol=1e-10)
    assert acc.count.tolist() == [49 * 64] * 2  # counts and extremes see every sample


def test_time_layout_of_rank_two_uses_the_last_axis():
    x = batches(3, [(3, 2, 4, 40)])[0]  # (N, C, A, T)
    acc = ChannelSpectrum(nperseg=16)
    feed(acc, x)
    folded = x.permute(0, 2, 1, 3).reshape(12, 2, 40).numpy()
    _, ref = welch_reference(folded, 16, axis=2)
    np.testing.assert_allclose(acc.psd().numpy(), ref, rtol=1e-10)


def test_merge_of_splits_equals_one_pass():
    xs = batches(4, [(3, 5, 70)] * 6)
    one = ChannelSpectrum(nperseg=20, thresholds=(0.0,))
    for x in xs:
        feed(one, x)
    parts = [ChannelSpectrum(nperseg=20, thresholds=(0.0,)) for _ in range(3)]
    for i, x in enumerate(xs):
        feed(parts[i % 3], x)
    merged = ChannelSpectrum(nperseg=20, thresholds=(0.0,))
    for p in parts:
        merged.merge(p)
    for f in ("power", "segments", "count", "min", "max", "above"):
        torch.testing.assert_close(getattr(merged, f), getattr(one, f), rtol=1e-13, atol=0)


def test_state_dict_round_trip_and_merge_after_it():
    xs = batches(5, [(4, 3, 64)] * 40)
    acc = ChannelSpectrum(nperseg=32, stream_spectrum=True, stream_nperseg=8, bands={"a": (0, 0.2)})
    for x in xs[:20]:
        feed(acc, x)
    back = ChannelSpectrum.from_state_dict(acc.state_dict())
    for x in xs[20:]:
        feed(acc, x)
        feed(back, x)
    torch.testing.assert_close(back.psd(), acc.psd(), rtol=0, atol=0)
    torch.testing.assert_close(back.stream_psd(), acc.stream_psd(), rtol=0, atol=0)
    assert back.bands == {"a": (0, 0.2)} and back.stream_steps == 40


def test_empty_accumulator_state_and_merge():
    empty = ChannelSpectrum()
    assert ChannelSpectrum.from_state_dict(empty.state_dict()).power is None
    full = ChannelSpectrum()
    feed(full, batches(6, [(2, 2, 64)])[0])
    empty.merge(full)
    torch.testing.assert_close(empty.psd(), full.psd())
    full.merge(ChannelSpectrum())  # merging nothing changes nothing
    torch.testing.assert_close(empty.psd(), full.psd())


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 4), c=st.integers(1, 3), t=st.integers(8, 80), nperseg=st.integers(2, 90),
    cuts=st.lists(st.integers(1, 3), min_size=1, max_size=4), seed=st.integers(0, 2**16),
    channels_last=st.booleans(),
)
def test_property_streaming_welch_equals_scipy(n, c, t, nperseg, cuts, seed, channels_last):
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((sum(cuts) * n, c, t)) * rng.uniform(0.1, 10) + rng.uniform(-5, 5)
    acc = ChannelSpectrum(nperseg=nperseg, spectrum_samples=None)
    start = 0
    for k in cuts:
        part = torch.from_numpy(data[start : start + k * n])
        start += k * n
        if channels_last:
            feed(acc, part.transpose(1, 2).contiguous(), Layout(-1, Axis.TIME))
        else:
            feed(acc, part)
    _, ref = welch_reference(data, min(nperseg, t), axis=2)
    np.testing.assert_allclose(acc.psd().numpy(), ref, rtol=1e-9, atol=1e-12 * max(ref.max(), 1e-300))


def exact_ring(ky: int, kx: int, h: int, w: int) -> int:
    """⌊r/Δ + ½⌋ in exact rational arithmetic: (r/Δ)² = m²(ky²/h² + kx²/w²), m = min(h, w)."""
    m = min(h, w)
    q = Fraction(m * m * (ky * ky * w * w + kx * kx * h * h), h * h * w * w)
    j = 0
    while Fraction(2 * j + 1, 2) ** 2 <= q:  # r/Δ ≥ j + ½: the next ring
        j += 1
    return j


def radial_reference(x: np.ndarray) -> np.ndarray:
    """Brute force: per sample and channel, |FFT2(x − mean)|²/(HW), averaged over each ring."""
    n, c, h, w = x.shape
    rings = min(h, w) // 2 + 1
    ky_all, kx_all = np.fft.fftfreq(h, 1 / h).astype(int), np.fft.fftfreq(w, 1 / w).astype(int)
    out = np.zeros((c, rings))
    for ch in range(c):
        total, count = np.zeros(rings), np.zeros(rings)
        for s in range(n):
            img = x[s, ch] - x[s, ch].mean()
            p = np.abs(np.fft.fft2(img)) ** 2 / (h * w)
            for i in range(h):
                for j in range(w):
                    ring = exact_ring(int(ky_all[i]), int(kx_all[j]), h, w)
                    if ring < rings:
                        total[ring] += p[i, j]
                        count[ring] += 1
        out[ch] = total / count
    return out


@pytest.mark.parametrize("shape", [(8, 8), (7, 10), (12, 9), (16, 5), (6, 8), (10, 20)])
def test_radial_spectrum_matches_brute_force(shape):
    xs = batches(7, [(3, 2, *shape), (2, 2, *shape)], offset=1.5)
    acc = ChannelSpectrum()
    for x in xs:
        feed(acc, x, Layout(1, Axis.SPACE))
    assert acc.kind == "radial"
    reference = radial_reference(torch.cat(xs).numpy())
    np.testing.assert_allclose(acc.psd().numpy(), reference, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(acc.frequencies().numpy(), np.arange(min(shape) // 2 + 1) / min(shape))


def test_radial_channels_last():
    x = batches(8, [(3, 6, 8, 4)])[0]  # (N, H, W, C)
    acc = ChannelSpectrum()
    feed(acc, x, Layout(-1, Axis.SPACE))
    np.testing.assert_allclose(acc.psd().numpy(), radial_reference(x.permute(0, 3, 1, 2).numpy()), rtol=1e-10,
                               atol=1e-14)


def test_stream_spectrum_equals_welch_of_batch_means():
    gen = np.random.default_rng(9)
    steps = 45
    level = np.sin(2 * np.pi * 0.2 * np.arange(steps)) + 0.1 * gen.standard_normal(steps)
    acc = ChannelSpectrum(stream_spectrum=True, stream_nperseg=16)
    means = []
    for s in range(steps):
        signs = np.array([1.0, -2.0])[None, :, None]
        x = torch.from_numpy(gen.standard_normal((4, 2, 1)) * 0.3 + level[s] * signs)
        feed(acc, x[:, :, 0], Layout(-1, Axis.NONE))  # (N, C): no time axis inside a batch
        means.append(x.numpy().mean(axis=(0, 2)))
    _, ref = scipy.signal.welch(np.array(means).T, nperseg=16)  # (C, F)
    assert acc.kind == "none" and acc.stream_segments == (steps - 16) // 8 + 1
    np.testing.assert_allclose(acc.stream_psd().numpy(), ref, rtol=1e-10)


def test_non_finite_values_leave_only_their_channel_out():
    xs = batches(10, [(4, 3, 64)] * 3)
    xs[1][2, 1, 5] = float("nan")
    acc = ChannelSpectrum(nperseg=32)
    for x in xs:
        feed(acc, x)
    clean = [xs[0], xs[2]]
    _, ref_all = welch_reference(torch.cat(xs).numpy(), 32, axis=2)
    _, ref_clean = welch_reference(torch.cat(clean).numpy(), 32, axis=2)
    psd = acc.psd().numpy()
    np.testing.assert_allclose(psd[[0, 2]], ref_all[[0, 2]], rtol=1e-10)
    np.testing.assert_allclose(psd[1], ref_clean[1], rtol=1e-10)
    assert acc.segments.tolist() == [36, 24, 36]


def test_short_later_batches_are_skipped_and_counted():
    acc = ChannelSpectrum(nperseg=32)
    feed(acc, batches(11, [(2, 3, 40)])[0])
    feed(acc, batches(12, [(5, 3, 20)])[0])
    assert acc.length == 32 and acc.skipped == 5


def test_layers_without_a_spectrum_axis():
    acc = ChannelSpectrum()
    feed(acc, batches(13, [(4, 7)])[0], Layout(-1, Axis.NONE))  # (N, C)
    assert acc.kind == "none" and acc.psd().numel() == 0
    tiny = ChannelSpectrum()
    feed(tiny, batches(14, [(4, 2, 3, 3)])[0], Layout(1, Axis.SPACE))  # a 3×3 image is too small
    assert tiny.kind == "none"


def test_failure_paths():
    with pytest.raises(ValueError, match="nperseg"):
        ChannelSpectrum(nperseg=1)
    with pytest.raises(ValueError, match="fs"):
        ChannelSpectrum(fs=0)
    acc = ChannelSpectrum()
    feed(acc, batches(15, [(2, 3, 64)])[0])
    with pytest.raises(ValueError, match="channel count changed"):
        feed(acc, batches(16, [(2, 4, 64)])[0])
    img = ChannelSpectrum()
    feed(img, batches(17, [(2, 3, 8, 8)])[0], Layout(1, Axis.SPACE))
    with pytest.raises(ValueError, match="image size changed"):
        feed(img, batches(18, [(2, 3, 9, 8)])[0], Layout(1, Axis.SPACE))
    other = ChannelSpectrum(nperseg=16)
    feed(other, batches(19, [(2, 3, 64)])[0])
    with pytest.raises(ValueError, match="cannot merge"):
        acc.merge(other)


def test_counts_and_segments_fold_uniform_increments_exactly():
    # all-finite batches add the same count and segments to every channel as a Python int, folded in
    # when read: reading in between, non-finite batches and a round trip must see the exact tensors
    xs = batches(21, [(3, 2, 64)] * 5)
    xs[2][1, 0, 7] = float("inf")
    acc = ChannelSpectrum(nperseg=32, spectrum_samples=None)
    for i, x in enumerate(xs):
        feed(acc, x)
        if i == 1:
            assert acc.count.tolist() == [2 * 3 * 64] * 2 and acc.segments.tolist() == [2 * 3 * 3] * 2
    data = torch.cat(xs).numpy()
    assert acc.count.tolist() == np.isfinite(data).sum(axis=(0, 2)).tolist() == [5 * 3 * 64 - 1, 5 * 3 * 64]
    assert acc.segments.tolist() == [4 * 3 * 3, 5 * 3 * 3]
    feed(acc, xs[0])
    again = ChannelSpectrum.from_state_dict(acc.state_dict())
    assert again.count.tolist() == [6 * 3 * 64 - 1, 6 * 3 * 64] and torch.equal(again.segments, acc.segments)


@pytest.mark.parametrize("backend", ["torch", None])  # None: the native fold where it is built
@pytest.mark.parametrize("channels_last", [False, True])
def test_counts_extremes_and_threshold_counts_match_numpy(backend, channels_last):
    xs = batches(22, [(10, 3, 64), (4, 3, 64), (9, 3, 64)], offset=0.3)
    xs[1][2, 1, 5] = float("nan")  # that channel: no segments from this batch, its finite values counted
    acc = ChannelSpectrum(nperseg=32, thresholds=(0.0, 1.5), backend=backend)
    layout = Layout(-1, Axis.TIME) if channels_last else CHANNELS_FIRST_TIME
    for x in xs:
        feed(acc, x.transpose(1, 2).contiguous() if channels_last else x, layout)
    data = torch.cat(xs).numpy()
    finite = np.isfinite(data)
    assert acc.count.tolist() == finite.sum(axis=(0, 2)).tolist()
    np.testing.assert_array_equal(acc.min.numpy(), np.where(finite, data, np.inf).min(axis=(0, 2)))
    np.testing.assert_array_equal(acc.max.numpy(), np.where(finite, data, -np.inf).max(axis=(0, 2)))
    for t, thr in enumerate((0.0, 1.5)):
        assert acc.above[t].tolist() == (np.where(finite, data, -np.inf) > thr).sum(axis=(0, 2)).tolist()
    used = [x.shape[0] if x.shape[0] <= 8 else len(range(0, x.shape[0], -(-x.shape[0] // 8))) for x in xs]
    per_sample = (64 - 32) // 16 + 1
    assert acc.segments.tolist() == [sum(used) * per_sample, (used[0] + used[2]) * per_sample,
                                      sum(used) * per_sample]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("strided", [False, True])
def test_steady_state_native_path_matches_torch_and_scipy(dtype, channels_last, strided):
    """Many batches of one shape (the planned native path from the second batch on), with a non-finite
    batch, a merge and a restored state in between (each replaces or skips the plan), against the torch
    path and scipy.signal.welch on the samples used; an offset large against the spread (1e6 in float64,
    1e2 in float32, whose rounding at 1e6 exceeds the spread)."""
    from layerscope.kernels._native_accumulate import available

    if not available():
        pytest.skip("native extension not built")
    gen = torch.Generator().manual_seed(7)
    offset = 1e6 if dtype == torch.float64 else 1e2
    xs = [(offset + 1e-2 * torch.randn(20, 18, 2 * 96 if strided else 96, generator=gen, dtype=torch.float64))
          .to(dtype) for _ in range(6)]
    xs = [x[:, :, ::2] if strided else x for x in xs]  # (N, C, T); a non-contiguous view when strided
    bad = xs[3].clone()
    bad[2, 5, 7] = float("nan")
    layout = Layout(-1, Axis.TIME) if channels_last else CHANNELS_FIRST_TIME
    data = [x.transpose(1, 2) if channels_last else x for x in (*xs[:3], bad, *xs[3:])]
    native, ref = ChannelSpectrum(nperseg=32, thresholds=(offset,)), ChannelSpectrum(nperseg=32, thresholds=(offset,),
                                                                                      backend="torch")
    for i, x in enumerate(data):
        feed(native, x, layout)
        feed(ref, x, layout)
        if i == 1:
            assert native._fast is not None  # the plan is in use
        if i == 4:  # a restored state and a merge replace the state tensors: the plan must follow
            native = ChannelSpectrum.from_state_dict(native.state_dict())
            other = ChannelSpectrum(nperseg=32, thresholds=(offset,))
            other.merge(native)
            native = other
    # the detrend rounds at the offset's precision (1e-8 of the spread in float64, 1e-3 in float32),
    # which shows most in the near-empty low bins
    tol, atol = (1e-7, 1e-9) if dtype == torch.float64 else (2e-4, 2e-3)
    np.testing.assert_allclose(native.psd().numpy(), ref.psd().numpy(), rtol=tol, atol=atol * ref.psd().max().item())
    for f in ("segments", "count", "above"):
        assert torch.equal(getattr(native, f), getattr(ref, f)), f
    assert torch.equal(native.min, ref.min) and torch.equal(native.max, ref.max)
    # scipy on the samples used (every third of 20: x[::3]) of every batch, in channels without the NaN
    used = [x[::3].to(torch.float64).numpy() for x in (*xs[:3], bad, *xs[3:])]
    _, psd_all = welch_reference(np.concatenate(used), 32, axis=2)
    np.testing.assert_allclose(native.psd().numpy()[[0, 1, 17]], psd_all[[0, 1, 17]], rtol=tol,
                               atol=atol * psd_all.max())


@pytest.mark.skipif(not NATIVE_WELCH, reason="layerscope._C not built (the torch path is tested everywhere)")
@pytest.mark.parametrize("t", [100, 64, 37])  # time steps past the last 16-step tile of the in-register transpose
@pytest.mark.parametrize("channels", [16, 17, 40])
def test_native_welch_channels_first_tiles_and_tails(t, channels):
    from layerscope.stats._periodogram import hann_window, welch_power_parts

    x = torch.randn(3, channels, t, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        xd = x.to(dtype)
        window = hann_window(32, dtype)
        out = torch.zeros(channels, 17, 2, dtype=torch.float64)
        assert welch_parts_native(xd, 32, window, False, out)
        ref, _ = welch_power_parts(x, 32, hann_window(32))
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=tol, atol=tol * ref.max().item())


def test_steady_state_fold_without_a_spectrum_matches_torch():
    """A layer without a time axis (no spectrum): the planned fold alone, NaN batches included."""
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(16, 8, generator=gen) for _ in range(4)]
    xs[2][3, 1] = float("nan")
    xs[3][0, 0] = float("inf")
    native, ref = ChannelSpectrum(thresholds=(0.0, 1.0)), ChannelSpectrum(thresholds=(0.0, 1.0), backend="torch")
    for x in xs:
        feed(native, x, Layout(1, Axis.SPACE))
        feed(ref, x, Layout(1, Axis.SPACE))
    assert native.kind == "none"
    for f in ("segments", "count", "above", "min", "max"):
        assert torch.equal(getattr(native, f), getattr(ref, f)), f
