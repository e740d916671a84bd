// Per-batch update of the ``covariance`` accumulator in one call, and the batch finiteness test that
// several accumulators share (src/layerscope/kernels/_native_accumulate.py calls them through ctypes;
// the torch code in stats/covariance.py is the reference and the fallback).
//
// - ls_cov_update: the rows of a strided [N, C, S] (or [N, S, C]) float32/float64 batch, shifted by the
//   reference r (given in float64, exactly representable in the input's precision), added to the float64
//   shifted sums [[G, s], [sᵀ, n]] ([C+1, C+1], C-contiguous): G += Σ dᵢ dⱼ, s += Σ d, n += rows, with
//   d = x − r computed in the input's precision (as the torch path does).
//
//   Design: the rows go through in chunks of CHUNK; each chunk is copied, shifted, channel-major into a
//   small buffer (a chunk of channel c is one contiguous run, zero-padded to a multiple of LANES, and
//   the channels padded to a multiple of 4 with zero runs), then every 4×4 block of channel pairs on or
//   above the diagonal is one micro-kernel: 16 accumulators of LANES lanes each, elementwise adds that
//   the compiler vectorises without reassociating anything (no fast-math needed). At the end of each
//   chunk the lanes are summed into the float64 state, so float32 sums run over at most CHUNK/LANES
//   products (about 1e-7 relative per chunk, instead of the torch GEMM's float32 sum over every row of
//   the batch). The lower triangle is mirrored from the upper one. Only the buffer of one chunk is kept
//   (thread-local, O(C · CHUNK)): nothing proportional to the batch.
// - ls_all_zero2: whether a[i] + b[i] == 0 for every i < n (int64): the NaN and Inf counts of a batch's
//   channel reduction, i.e. ``ChannelStats.all_finite`` without three torch kernels.
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.hpp"

namespace {

using ls::i64;

constexpr i64 CHUNK = 512;  // rows per chunk: a multiple of LANES

// One 64-byte vector of T: GCC/Clang vector extensions (AVX-512 registers in the avx512f clone, pairs
// or quads of narrower registers in the others); elsewhere (MSVC) a plain array with the same
// elementwise operators, which the compiler may vectorise or not (-DLS_NO_VECTOR_EXT forces it).
#if defined(__GNUC__) && defined(__has_builtin) && !defined(LS_NO_VECTOR_EXT)
#if __has_builtin(__builtin_shufflevector)
#define LS_VECTOR_EXT 1
#endif
#endif

#if defined(LS_VECTOR_EXT)
template <class T>
struct Vec;
template <>
struct Vec<float> {
    typedef float type __attribute__((vector_size(64)));
};
template <>
struct Vec<double> {
    typedef double type __attribute__((vector_size(64)));
};
#else
template <class T>
struct Lanes {
    T v[64 / sizeof(T)];
    T operator[](i64 l) const { return v[l]; }
    Lanes operator*(const Lanes& o) const {
        Lanes r;
        for (std::size_t l = 0; l < 64 / sizeof(T); ++l) r.v[l] = v[l] * o.v[l];
        return r;
    }
    Lanes& operator+=(const Lanes& o) {
        for (std::size_t l = 0; l < 64 / sizeof(T); ++l) v[l] += o.v[l];
        return *this;
    }
};
template <class T>
struct Vec {
    typedef Lanes<T> type;
};
#endif

template <class T>
LS_INLINE void load(typename Vec<T>::type& v, const T* p) {
    std::memcpy(&v, p, sizeof v);
}

#if defined(LS_VECTOR_EXT)
// out[i] = Σ_l v_i[l] for the 16 accumulators of a block. For float32 (16 lanes) a tree of lane
// shuffles: each level adds the two halves of two vectors into one, so 15 vector adds give the 16 sums
// (a scalar loop here cost more than the block itself when a chunk has few rows); float64 sums the lanes.
LS_INLINE void reduce16(const Vec<float>::type (&v)[4][4], double* out) {
    using V = Vec<float>::type;
    V t[8], u[4], w[2];
    for (int i = 0; i < 8; ++i) {
        const V x = v[(2 * i) / 4][(2 * i) % 4], y = v[(2 * i + 1) / 4][(2 * i + 1) % 4];
        t[i] = __builtin_shufflevector(x, y, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               __builtin_shufflevector(x, y, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    }
    for (int i = 0; i < 4; ++i)
        u[i] = __builtin_shufflevector(t[2 * i], t[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26,
                                       27) +
               __builtin_shufflevector(t[2 * i], t[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30,
                                       31);
    for (int i = 0; i < 2; ++i)
        w[i] = __builtin_shufflevector(u[2 * i], u[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28,
                                       29) +
               __builtin_shufflevector(u[2 * i], u[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30,
                                       31);
    const V r = __builtin_shufflevector(w[0], w[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
                __builtin_shufflevector(w[0], w[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int i = 0; i < 16; ++i) out[i] = static_cast<double>(r[i]);
}
#endif

template <class V>
LS_INLINE void reduce16(const V (&v)[4][4], double* out) {
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) {
            double s = 0.0;
            for (std::size_t l = 0; l < sizeof(V) / sizeof(v[a][b][0]); ++l) s += static_cast<double>(v[a][b][l]);
            out[a * 4 + b] = s;
        }
}

// out[a][b] = Σ_r p[a][r] · q[b][r] for the 4×4 block of (p, q) rows, each `len` long (a multiple of one
// vector): 16 vector accumulators (AVX-512 has 32 registers), summed into float64 at the end.
template <class T>
LS_INLINE void block4x4(const T* p, const T* q, i64 stride, i64 len, double* out /*4x4*/) {
    using V = typename Vec<T>::type;
    constexpr i64 LANES = 64 / sizeof(T);
    V acc[4][4];
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) acc[a][b] = V{} ;
    for (i64 r = 0; r < len; r += LANES) {
        V p0, p1, p2, p3;
        load<T>(p0, p + r);
        load<T>(p1, p + stride + r);
        load<T>(p2, p + 2 * stride + r);
        load<T>(p3, p + 3 * stride + r);
        for (int b = 0; b < 4; ++b) {
            V qb;
            load<T>(qb, q + b * stride + r);
            acc[0][b] += p0 * qb;
            acc[1][b] += p1 * qb;
            acc[2][b] += p2 * qb;
            acc[3][b] += p3 * qb;
        }
    }
    reduce16(acc, out);
}

template <class T>
LS_INLINE void cov_update(const T* x, i64 n, i64 c, i64 s, i64 sn, i64 sc, i64 ss, const double* ref,
                          double* sums) {
    const i64 kp = (c + 3) / 4 * 4;
    const i64 total = n * s;
    const i64 w = c + 1;  // row length of the state
    constexpr i64 LANES = 64 / sizeof(T);
    thread_local std::vector<T> buf;
    if (static_cast<i64>(buf.size()) < kp * CHUNK) buf.resize(static_cast<std::size_t>(kp * CHUNK));
    for (i64 j = c * CHUNK; j < kp * CHUNK; ++j) buf[j] = T(0);  // the padding channels
    std::vector<T> r(static_cast<std::size_t>(c));
    for (i64 ch = 0; ch < c; ++ch) r[ch] = static_cast<T>(ref[ch]);
    std::vector<double> g(static_cast<std::size_t>(kp * kp), 0.0);  // upper blocks of this batch
    double blk[16];
    for (i64 start = 0; start < total; start += CHUNK) {
        const i64 len = total - start < CHUNK ? total - start : CHUNK;
        const i64 padded = (len + LANES - 1) / LANES * LANES;
        // copy the chunk channel-major, shifted; the rows from len to the next multiple of LANES zeroed
        if (padded > len)
            for (i64 ch = 0; ch < c; ++ch)
                for (i64 j = len; j < padded; ++j) buf[ch * CHUNK + j] = T(0);
        for (i64 j = 0; j < len;) {
            const i64 row = start + j;
            const i64 i = row / s, p0 = row % s;
            const i64 run = (s - p0 < len - j) ? s - p0 : len - j;  // rows of this sample in the chunk
            const T* base = x + i * sn + p0 * ss;
            if (ss == 1 || ss <= sc) {  // positions contiguous (channels first): channel by channel
                for (i64 ch = 0; ch < c; ++ch) {
                    const T* src = base + ch * sc;
                    T* dst = buf.data() + ch * CHUNK + j;
                    const T rc = r[ch];
                    for (i64 q = 0; q < run; ++q) dst[q] = src[q * ss] - rc;
                }
            } else {  // channels contiguous (channels last): position by position
                T* dst = buf.data() + j;
                for (i64 q0 = 0; q0 < run; q0 += 16) {  // 16 positions at a time: rows stay in L1
                    const i64 qn = run - q0 < 16 ? run - q0 : 16;
                    for (i64 ch = 0; ch < c; ++ch) {
                        const T* src = base + q0 * ss + ch * sc;
                        T* d = dst + ch * CHUNK + q0;
                        const T rc = r[ch];
                        for (i64 q = 0; q < qn; ++q) d[q] = src[q * ss] - rc;
                    }
                }
            }
            j += run;
        }
        // s: per channel, one vector of lane sums over the chunk (as for G), then float64
        for (i64 ch = 0; ch < c; ++ch) {
            const T* d = buf.data() + ch * CHUNK;
            typename Vec<T>::type acc = {};
            for (i64 j = 0; j < padded; j += LANES) {
                typename Vec<T>::type v;
                load<T>(v, d + j);
                acc += v;
            }
            double total_ch = 0.0;
            for (i64 l = 0; l < LANES; ++l) total_ch += static_cast<double>(acc[l]);
            sums[c * w + ch] += total_ch;
        }
        for (i64 a = 0; a < kp; a += 4)
            for (i64 b = a; b < kp; b += 4) {
                block4x4<T>(buf.data() + a * CHUNK, buf.data() + b * CHUNK, CHUNK, padded, blk);
                for (int u = 0; u < 4; ++u)
                    for (int v = 0; v < 4; ++v) g[(a + u) * kp + b + v] += blk[u * 4 + v];
            }
    }
    for (i64 a = 0; a < c; ++a) {
        for (i64 b = a; b < c; ++b) {
            const double v = g[a * kp + b];
            sums[a * w + b] += v;
            if (b != a) sums[b * w + a] += v;
        }
        sums[a * w + c] = sums[c * w + a];  // s, mirrored
    }
    sums[c * w + c] += static_cast<double>(total);
}

LS_CLONES void cov_update_f32(const float* x, i64 n, i64 c, i64 s, i64 sn, i64 sc, i64 ss, const double* ref,
                              double* sums) {
    cov_update<float>(x, n, c, s, sn, sc, ss, ref, sums);
}

LS_CLONES void cov_update_f64(const double* x, i64 n, i64 c, i64 s, i64 sn, i64 sc, i64 ss, const double* ref,
                              double* sums) {
    cov_update<double>(x, n, c, s, sn, sc, ss, ref, sums);
}

}  // namespace

extern "C" {

// x: [n, c, s] with element strides, float32 (dtype 0) or float64 (dtype 1), all finite; ref: float64 [c];
// sums: float64 [c+1, c+1], C-contiguous, added to. Returns 0, or 1 for an unknown dtype.
LS_EXPORT int ls_cov_update(const void* x, int dtype, i64 n, i64 c, i64 s, i64 sn, i64 sc, i64 ss,
                            const double* ref, double* sums) {
    if (dtype == 0)
        cov_update_f32(static_cast<const float*>(x), n, c, s, sn, sc, ss, ref, sums);
    else if (dtype == 1)
        cov_update_f64(static_cast<const double*>(x), n, c, s, sn, sc, ss, ref, sums);
    else
        return 1;
    return 0;
}

LS_EXPORT int ls_all_zero2(const i64* a, const i64* b, i64 n) {
    i64 any = 0;
    for (i64 i = 0; i < n; ++i) any |= a[i] + b[i];
    return any == 0 ? 1 : 0;
}

}  // extern "C"
