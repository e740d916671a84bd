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
#include <cstring>
#include <utility>
#include <vector>

#include "common.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#define LS_NO_VECTORIZE __attribute__((noinline, optimize("no-tree-vectorize")))
#else
#define LS_NO_VECTORIZE
#endif

namespace {

constexpr double PI = 3.14159265358979323846;

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
            const double a = -2.0 * PI * static_cast<double>(k) / static_cast<double>(n);
            tw_re[k] = static_cast<T>(std::cos(a));
            tw_im[k] = static_cast<T>(std::sin(a));
        }
        sp_re.resize(n + 1);
        sp_im.resize(n + 1);
        for (i64 k = 0; k <= n; ++k) {
            const double a = -2.0 * PI * static_cast<double>(k) / static_cast<double>(L);
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

// One block of BLOCK segments in structure-of-arrays form: raw[t·rs + b] is value t of segment b (lanes
// without a segment are zero; rs ≥ BLOCK lets raw be the input itself, or a transposed sample). Detrends, windows, transforms and adds Re², Im² of each bin into the
// lanes of acc ([F][2][BLOCK], in the input's precision: a lane's sums of one batch, a few dozen
// segments by default, before they go into the float64 state). re/im: [N][BLOCK] work space.
template <class T>
LS_INLINE void block_fft(const T* raw, i64 rs, i64 L, const T* window, const Tables<T>& tab, T* re, T* im,
                         T* acc) {
    const i64 n = L / 2;
    // the segment sums in four interleaved partial sums (L is a multiple of 4): four independent add
    // chains instead of one L long
    T mean[BLOCK], part[4][BLOCK];
    for (int q = 0; q < 4; ++q)
        for (int b = 0; b < BLOCK; ++b) part[q][b] = T(0);
    for (i64 t = 0; t < L; t += 4) {
        for (int q = 0; q < 4; ++q) {
            const T* r = raw + (t + q) * rs;
#pragma omp simd
            for (int b = 0; b < BLOCK; ++b) part[q][b] += r[b];
        }
    }
    for (int b = 0; b < BLOCK; ++b) mean[b] = ((part[0][b] + part[1][b]) + (part[2][b] + part[3][b])) / static_cast<T>(L);
    // detrend + window + pack z_j = y_2j + i·y_2j+1, written bit-reversed
    for (i64 j = 0; j < n; ++j) {
        const i64 r = tab.bitrev[j];
        const T w0 = window[2 * j], w1 = window[2 * j + 1];
        const T* a = raw + (2 * j) * rs;
        const T* c = raw + (2 * j + 1) * rs;
        T* zr = re + r * BLOCK;
        T* zi = im + r * BLOCK;
#pragma omp simd
        for (int b = 0; b < BLOCK; ++b) {
            zr[b] = w0 * (a[b] - mean[b]);
            zi[b] = w1 * (c[b] - mean[b]);
        }
    }
    // radix-2 decimation in time, in place; the twiddles 1 (k = 0 of every stage, hence all of the
    // first) and −i (k = 1 of the second) need no products
    for (i64 size = 2; size <= n; size *= 2) {
        const i64 half = size / 2, step = n / size;
        for (i64 start = 0; start < n; start += size) {
            {  // k = 0: the twiddle is 1
                T* ar = re + start * BLOCK;
                T* ai = im + start * BLOCK;
                T* br = re + (start + half) * BLOCK;
                T* bi = im + (start + half) * BLOCK;
#pragma omp simd
                for (int b = 0; b < BLOCK; ++b) {
                    const T tr = br[b], ti = bi[b];
                    br[b] = ar[b] - tr;
                    bi[b] = ai[b] - ti;
                    ar[b] = ar[b] + tr;
                    ai[b] = ai[b] + ti;
                }
            }
            if (size == 4) {  // k = 1 of the second stage: the twiddle is −i, (tr, ti) = (bi, −br)
                T* ar = re + (start + 1) * BLOCK;
                T* ai = im + (start + 1) * BLOCK;
                T* br = re + (start + 3) * BLOCK;
                T* bi = im + (start + 3) * BLOCK;
#pragma omp simd
                for (int b = 0; b < BLOCK; ++b) {
                    const T tr = bi[b], ti = -br[b];
                    br[b] = ar[b] - tr;
                    bi[b] = ai[b] - ti;
                    ar[b] = ar[b] + tr;
                    ai[b] = ai[b] + ti;
                }
                continue;
            }
            for (i64 k = 1; k < half; ++k) {
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
    // split into the real FFT's bins 0 … N and add the squares, per lane. Bins k and N − k share their
    // pair (Z_k, Z_{N−k}): with E, O as below and T = e^{−2πik/L}·O, X_k = E + T and X_{N−k} = conj(E − T)
    // (E and O of N − k are the conjugates of those of k, and e^{−2πi(N−k)/L} = −conj e^{−2πik/L}), so one
    // pass over k ≤ N/2 gives both (bin N from k = 0; k = N/2 is its own partner).
    for (i64 k = 0; k <= n / 2; ++k) {
        const i64 q = (n - k) % n;
        const T cr = tab.sp_re[k], ci = tab.sp_im[k];
        const T* zr = re + k * BLOCK;
        const T* zi = im + k * BLOCK;
        const T* yr = re + q * BLOCK;
        const T* yi = im + q * BLOCK;
        T* acc_re = acc + (2 * k) * BLOCK;
        T* acc_im = acc + (2 * k + 1) * BLOCK;
        T* mir_re = acc + (2 * (n - k)) * BLOCK;
        T* mir_im = acc + (2 * (n - k) + 1) * BLOCK;
        if (2 * k == n) {
#pragma omp simd
            for (int b = 0; b < BLOCK; ++b) {
                const T er = T(0.5) * (zr[b] + yr[b]), ei = T(0.5) * (zi[b] - yi[b]);
                const T or_ = T(0.5) * (zi[b] + yi[b]), oi = T(-0.5) * (zr[b] - yr[b]);
                const T xr = er + (cr * or_ - ci * oi);
                const T xi = ei + (cr * oi + ci * or_);
                acc_re[b] += xr * xr;
                acc_im[b] += xi * xi;
            }
            continue;
        }
#pragma omp simd
        for (int b = 0; b < BLOCK; ++b) {
            // E = (Z_k + conj Z_{N−k})/2, O = (Z_k − conj Z_{N−k})/(2i)
            const T er = T(0.5) * (zr[b] + yr[b]), ei = T(0.5) * (zi[b] - yi[b]);
            const T or_ = T(0.5) * (zi[b] + yi[b]), oi = T(-0.5) * (zr[b] - yr[b]);
            const T tr = cr * or_ - ci * oi, ti = cr * oi + ci * or_;
            const T xr = er + tr, xi = ei + ti;
            const T mr = er - tr, mi = ei - ti;  // X_{N−k} = (mr, −mi): the sign goes in the square
            acc_re[b] += xr * xr;
            acc_im[b] += xi * xi;
            mir_re[b] += mr * mr;
            mir_im[b] += mi * mi;
        }
    }
}

// The lanes' sums into float64 state: all lanes into one channel's out[F][2] (lanes = segments; the
// lanes are cleared), or lane b into channel b's out[F][2] (lanes = channels, `lanes` of them; acc may
// start inside a row of lanes, and the caller clears it).
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
LS_INLINE void flush_lanes(T* acc, i64 bins, int lanes, double* out) {
    for (i64 j = 0; j < 2 * bins; ++j) {
        for (int b = 0; b < lanes; ++b) out[b * 2 * bins + j] += static_cast<double>(acc[j * BLOCK + b]);
    }
}

// raw[t][b] = starts[b][t·st] for b < used, else 0. Kept scalar: vectorised, these strided stores
// (or loads) become scatter (gather) instructions, which are slow on some CPUs.
template <class T>
LS_NO_VECTORIZE void to_lanes(const T* const* starts, int used, i64 L, i64 st,
                                                                      T* raw) {
    for (int b = 0; b < BLOCK; ++b) {
        if (b < used) {
            const T* s = starts[b];
            for (i64 tt = 0; tt < L; ++tt) raw[tt * BLOCK + b] = s[tt * st];
        } else {
            for (i64 tt = 0; tt < L; ++tt) raw[tt * BLOCK + b] = T(0);
        }
    }
}

#if defined(__GNUC__) && defined(__has_builtin) && !defined(LS_NO_VECTOR_EXT)
#if __has_builtin(__builtin_shufflevector)
#define LS_VECTOR_EXT 1
#endif
#endif

#if defined(LS_VECTOR_EXT)  // GCC/Clang vector extensions; elsewhere (MSVC) the scalar copy
// tr[t][b] = rows[b][t] for 16 rows of float32 with unit time stride (channels first, BLOCK == 16), in
// 16×16 tiles transposed in registers: each of four stages swaps the off-diagonal h×h blocks of every
// 2h×2h block (h = 8, 4, 2, 1) with two-input lane shuffles, so no gather or scatter is needed; the
// time steps past the last full tile go through the scalar copy.
typedef float Vf16 __attribute__((vector_size(64)));

template <int H, int L>
constexpr int top_lane() { return (L & H) == 0 ? L : 16 + L - H; }
template <int H, int L>
constexpr int bottom_lane() { return (L & H) == 0 ? L + H : 16 + L; }

template <int H, int... Ls>
LS_INLINE void swap_blocks(Vf16* v, std::integer_sequence<int, Ls...>) {
    for (int i = 0; i < 16; ++i) {
        if (i & H) continue;
        const Vf16 a = v[i], b = v[i + H];
        v[i] = __builtin_shufflevector(a, b, top_lane<H, Ls>()...);
        v[i + H] = __builtin_shufflevector(a, b, bottom_lane<H, Ls>()...);
    }
}

LS_INLINE void transpose_rows16(const float* x, i64 sc, i64 t, float* tr) {
    static_assert(BLOCK == 16, "the tile is BLOCK × 16 float32");
    const auto lanes = std::make_integer_sequence<int, 16>{};
    i64 t0 = 0;
    for (; t0 + 16 <= t; t0 += 16) {
        Vf16 v[16];
        for (int b = 0; b < 16; ++b) std::memcpy(&v[b], x + b * sc + t0, sizeof(Vf16));
        swap_blocks<8>(v, lanes);
        swap_blocks<4>(v, lanes);
        swap_blocks<2>(v, lanes);
        swap_blocks<1>(v, lanes);
        for (int q = 0; q < 16; ++q) std::memcpy(tr + (t0 + q) * BLOCK, &v[q], sizeof(Vf16));
    }
    for (; t0 < t; ++t0)
        for (int b = 0; b < 16; ++b) tr[t0 * BLOCK + b] = x[b * sc + t0];
}
#endif

template <class T>
LS_INLINE void sample_to_lanes(const T* s, i64 sc, i64 st, i64 t, const T** starts, T* tr) {
#if defined(LS_VECTOR_EXT)
    if constexpr (sizeof(T) == 4) {
        if (st == 1) {
            transpose_rows16(reinterpret_cast<const float*>(s), sc, t, reinterpret_cast<float*>(tr));
            return;
        }
    }
#endif
    for (int b = 0; b < BLOCK; ++b) starts[b] = s + b * sc;
    to_lanes<T>(starts, BLOCK, t, st, tr);
}

template <class T>
void grow(std::vector<T>& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
}

template <class T>
LS_INLINE void welch_parts(const T* x, i64 n, i64 c, i64 t, i64 sn, i64 sc, i64 st, i64 L, const T* window,
                           double* out) {
    const i64 hop = L - L / 2, k_seg = (t - L) / hop + 1, bins = L / 2 + 1;
    const Tables<T>& tab = tables_for<T>(L);
    // work space, kept per thread between calls (a call per layer and batch: no allocation and no
    // clearing but the accumulators'); raw, re, im and tr are written before they are read
    thread_local std::vector<T> raw, re, im, acc, tr;
    grow(raw, static_cast<std::size_t>(L) * BLOCK);
    grow(re, static_cast<std::size_t>(L / 2) * BLOCK);
    grow(im, static_cast<std::size_t>(L / 2) * BLOCK);
    grow(acc, static_cast<std::size_t>(2 * bins) * BLOCK);
    for (i64 j = 0; j < 2 * bins * BLOCK; ++j) acc[j] = T(0);
    const T* starts[BLOCK];
    if (c >= BLOCK) {
        // lanes are BLOCK neighbouring channels at one (sample, segment): every lane busy. Channels last,
        // the segment's rows are read in place (row stride st); channels first, each sample's block of
        // channels is transposed once into tr[T][BLOCK] and its segments are row offsets in it.
        if (sc != 1) grow(tr, static_cast<std::size_t>(t) * BLOCK);
        for (i64 c0 = 0; c0 < c; c0 += BLOCK) {
            const int lanes = static_cast<int>(c - c0 < BLOCK ? c - c0 : BLOCK);
            const i64 first = c0 + lanes - BLOCK;  // the last block overlaps the previous one: full lanes
            for (i64 i = 0; i < n; ++i) {
                const T* s = x + i * sn + first * sc;
                if (sc != 1) sample_to_lanes<T>(s, sc, st, t, starts, tr.data());
                for (i64 k = 0; k < k_seg; ++k) {
                    if (sc == 1)
                        block_fft<T>(s + k * hop * st, st, L, window, tab, re.data(), im.data(), acc.data());
                    else
                        block_fft<T>(tr.data() + k * hop * BLOCK, BLOCK, L, window, tab, re.data(), im.data(),
                                     acc.data());
                }
            }
            // lanes BLOCK − lanes … BLOCK − 1 are channels c0 … c0 + lanes − 1 (the others were counted)
            flush_lanes<T>(acc.data() + (BLOCK - lanes), bins, lanes, out + c0 * bins * 2);
            for (i64 j = 0; j < 2 * bins * BLOCK; ++j) acc[j] = T(0);
        }
        return;
    }
    // fewer channels than lanes: lanes are segments of one channel
    auto run = [&](int used) {
        to_lanes<T>(starts, used, L, st, raw.data());
        block_fft<T>(raw.data(), BLOCK, L, window, tab, re.data(), im.data(), acc.data());
    };
    for (i64 ch = 0; ch < c; ++ch) {
        int used = 0;
        for (i64 i = 0; i < n; ++i) {
            for (i64 k = 0; k < k_seg; ++k) {
                starts[used++] = x + i * sn + ch * sc + k * hop * st;
                if (used == BLOCK) {
                    run(used);
                    used = 0;
                }
            }
        }
        if (used) run(used);
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
LS_EXPORT int ls_welch_parts(const void* x, int dtype, i64 n, i64 c, i64 t, i64 sn,
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
