// Welch sums of one batch for the ``spectrum`` accumulator, in one call: for every segment of every
// sample of every channel, detrend (subtract the segment mean), window, real FFT, and add the squared
// real and imaginary parts of each bin into float64 state ``[C, L/2+1, 2]`` (the definitions are in
// src/layerscope/stats/spectrum.py and _periodogram.py, whose torch code is the reference and the
// fallback).
//
// The real FFT of length L (a power of two, 8 ≤ L ≤ 2^16) is a complex radix-2 FFT of length L/2 on
// the packed samples z_j = y_2j + i·y_2j+1, then the usual split:
//     X_k = (Z_k + conj Z_{N−k})/2 − i/2 · e^{−2πik/L} (Z_k − conj Z_{N−k}),  N = L/2.
// Segments go through it BLOCK at a time (structure of arrays, the segment index innermost) so that the
// compiler vectorises every butterfly across segments. Arithmetic in the input's precision (float32 or
// float64), squares summed in float64.
//
// Called through ctypes (a plain C symbol: no pybind11, no numpy conversion per call): the pointers and
// element strides come from torch tensors on the CPU. Only for all-finite batches (the caller checks).
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.hpp"

namespace {

using ls::i64;
constexpr int BLOCK = 16;

template <class T>
struct Tables {
    i64 length = 0;
    std::vector<T> tw_re, tw_im;    // e^{−2πi k/N}, k < N/2: the butterflies' twiddles
    std::vector<T> sp_re, sp_im;    // e^{−2πi k/L}, k ≤ N: the split's twiddles
    std::vector<int> bitrev;        // [N]

    void build(i64 L) {
        length = L;
        const i64 n = L / 2;
        tw_re.resize(n / 2 + 1);
        tw_im.resize(n / 2 + 1);
        for (i64 k = 0; k <= n / 2; ++k) {
            const double a = -2.0 * M_PI * static_cast<double>(k) / static_cast<double>(n);
            tw_re[k] = static_cast<T>(std::cos(a));
            tw_im[k] = static_cast<T>(std::sin(a));
        }
        sp_re.resize(n + 1);
        sp_im.resize(n + 1);
        for (i64 k = 0; k <= n; ++k) {
            const double a = -2.0 * M_PI * static_cast<double>(k) / static_cast<double>(L);
            sp_re[k] = static_cast<T>(std::cos(a));
            sp_im[k] = static_cast<T>(std::sin(a));
        }
        bitrev.assign(n, 0);
        int bits = 0;
        while ((i64{1} << bits) < n) ++bits;
        for (i64 j = 0; j < n; ++j) {
            int r = 0;
            for (int b = 0; b < bits; ++b) r |= static_cast<int>((j >> b) & 1) << (bits - 1 - b);
            bitrev[j] = r;
        }
    }
};

template <class T>
Tables<T>& tables_for(i64 L) {
    thread_local Tables<T> t;
    if (t.length != L) t.build(L);
    return t;
}

// One block of up to BLOCK segments of one channel; `starts[b]` points at segment b's first value
// (element stride `st`); lanes ≥ `used` are zero. Adds Re², Im² of each bin into the lanes of acc
// ([F][2][BLOCK], in the input's precision: a channel's lanes hold the sums of its segments of one batch,
// a few dozen by default, before they go into the float64 state).
template <class T>
LS_INLINE void block_fft(const T* const* starts, int used, i64 st, i64 L, const T* window, const Tables<T>& tab,
                         T* re, T* im, T* acc) {
    const i64 n = L / 2;
    // detrend + window + pack, written bit-reversed
    for (int b = 0; b < BLOCK; ++b) {
        if (b >= used) {
            for (i64 j = 0; j < n; ++j) re[j * BLOCK + b] = im[j * BLOCK + b] = T(0);
            continue;
        }
        const T* s = starts[b];
        T sum = 0;
        for (i64 t = 0; t < L; ++t) sum += s[t * st];
        const T mean = sum / static_cast<T>(L);
        for (i64 j = 0; j < n; ++j) {
            const i64 r = tab.bitrev[j];
            re[r * BLOCK + b] = window[2 * j] * (s[(2 * j) * st] - mean);
            im[r * BLOCK + b] = window[2 * j + 1] * (s[(2 * j + 1) * st] - mean);
        }
    }
    // radix-2 decimation in time, in place
    for (i64 size = 2; size <= n; size *= 2) {
        const i64 half = size / 2, step = n / size;
        for (i64 start = 0; start < n; start += size) {
            for (i64 k = 0; k < half; ++k) {
                const T wr = tab.tw_re[k * step], wi = tab.tw_im[k * step];
                T* ar = re + (start + k) * BLOCK;
                T* ai = im + (start + k) * BLOCK;
                T* br = re + (start + k + half) * BLOCK;
                T* bi = im + (start + k + half) * BLOCK;
#pragma omp simd
                for (int b = 0; b < BLOCK; ++b) {
                    const T tr = wr * br[b] - wi * bi[b];
                    const T ti = wr * bi[b] + wi * br[b];
                    br[b] = ar[b] - tr;
                    bi[b] = ai[b] - ti;
                    ar[b] = ar[b] + tr;
                    ai[b] = ai[b] + ti;
                }
            }
        }
    }
    // split into the real FFT's bins 0 … N and add the squares, per lane (acc: [N+1][2][BLOCK])
    for (i64 k = 0; k <= n; ++k) {
        const i64 p = k % n, q = (n - k) % n;
        const T cr = tab.sp_re[k], ci = tab.sp_im[k];
        const T* zr = re + p * BLOCK;
        const T* zi = im + p * BLOCK;
        const T* yr = re + q * BLOCK;
        const T* yi = im + q * BLOCK;
        T* acc_re = acc + (2 * k) * BLOCK;
        T* acc_im = acc + (2 * k + 1) * BLOCK;
#pragma omp simd
        for (int b = 0; b < BLOCK; ++b) {
            // E = (Z_k + conj Z_{N−k})/2, O = (Z_k − conj Z_{N−k})/(2i)
            const T er = T(0.5) * (zr[b] + yr[b]), ei = T(0.5) * (zi[b] - yi[b]);
            const T or_ = T(0.5) * (zi[b] + yi[b]), oi = T(-0.5) * (zr[b] - yr[b]);
            const T xr = er + cr * or_ - ci * oi;
            const T xi = ei + cr * oi + ci * or_;
            acc_re[b] += xr * xr;
            acc_im[b] += xi * xi;
        }
    }
}

// The lanes' sums of one channel into its float64 state out[F][2]; the lanes are cleared.
template <class T>
LS_INLINE void flush(T* acc, i64 bins, double* out) {
    for (i64 j = 0; j < 2 * bins; ++j) {
        double s = 0.0;
        for (int b = 0; b < BLOCK; ++b) s += static_cast<double>(acc[j * BLOCK + b]);
        out[j] += s;
        for (int b = 0; b < BLOCK; ++b) acc[j * BLOCK + b] = T(0);
    }
}

template <class T>
LS_INLINE void welch_parts(const T* x, i64 n, i64 c, i64 t, i64 sn, i64 sc, i64 st, i64 L, const T* window,
                           double* out) {
    const i64 hop = L - L / 2, k_seg = (t - L) / hop + 1, bins = L / 2 + 1;
    const Tables<T>& tab = tables_for<T>(L);
    std::vector<T> re(static_cast<std::size_t>(L / 2) * BLOCK), im(re.size());
    std::vector<T> acc(static_cast<std::size_t>(2 * bins) * BLOCK, T(0));
    const T* starts[BLOCK];
    for (i64 ch = 0; ch < c; ++ch) {
        int used = 0;
        for (i64 i = 0; i < n; ++i) {
            for (i64 k = 0; k < k_seg; ++k) {
                starts[used++] = x + i * sn + ch * sc + k * hop * st;
                if (used == BLOCK) {
                    block_fft<T>(starts, used, st, L, window, tab, re.data(), im.data(), acc.data());
                    used = 0;
                }
            }
        }
        if (used) block_fft<T>(starts, used, st, L, window, tab, re.data(), im.data(), acc.data());
        flush<T>(acc.data(), bins, out + ch * bins * 2);
    }
}

LS_CLONES void welch_parts_f32(const float* x, i64 n, i64 c, i64 t, i64 sn, i64 sc, i64 st, i64 L,
                               const float* window, double* out) {
    welch_parts<float>(x, n, c, t, sn, sc, st, L, window, out);
}

LS_CLONES void welch_parts_f64(const double* x, i64 n, i64 c, i64 t, i64 sn, i64 sc, i64 st, i64 L,
                               const double* window, double* out) {
    welch_parts<double>(x, n, c, t, sn, sc, st, L, window, out);
}

bool valid_length(i64 L) { return L >= 8 && L <= (i64{1} << 16) && (L & (L - 1)) == 0; }

}  // namespace

extern "C" {

// x: [n, c, t] with element strides (sn, sc, st), float32 (dtype 0) or float64 (dtype 1); window [L] of
// the same dtype; out: float64 [c, L/2+1, 2], C-contiguous, added to. Returns 0, or −1 when L is not a
// power of two in [8, 2^16] or t < L (nothing done).
__attribute__((visibility("default"))) int ls_welch_parts(const void* x, int dtype, i64 n, i64 c, i64 t, i64 sn,
                                                          i64 sc, i64 st, i64 L, const void* window, double* out) {
    if (!valid_length(L) || t < L || n < 0 || c < 0) return -1;
    try {
        if (dtype == 0)
            welch_parts_f32(static_cast<const float*>(x), n, c, t, sn, sc, st, L, static_cast<const float*>(window), out);
        else
            welch_parts_f64(static_cast<const double*>(x), n, c, t, sn, sc, st, L, static_cast<const double*>(window), out);
    } catch (...) {
        return -2;
    }
    return 0;
}

}  // extern "C"
