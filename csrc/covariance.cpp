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
#include <vector>

#include "common.hpp"

#if defined(_WIN32)
#define LS_EXPORT __declspec(dllexport)
#else
#define LS_EXPORT __attribute__((visibility("default")))
#endif

namespace {

using ls::i64;

constexpr i64 CHUNK = 512;  // rows per chunk: a multiple of LANES

// acc[a][b][l] += p[a][l] · q[b][l] over the chunk; the 4×4 block of (p, q) rows, each `len` long (a
// multiple of LANES). LANES fills one 64-byte vector, so the 16 accumulators fit AVX-512's registers.
template <class T>
LS_INLINE void block4x4(const T* p, const T* q, i64 stride, i64 len, double* out /*4x4*/) {
    constexpr i64 LANES = 64 / sizeof(T);
    T acc[4][4][LANES] = {};
    for (i64 r = 0; r < len; r += LANES) {
        for (int a = 0; a < 4; ++a) {
            const T* pa = p + a * stride + r;
            for (int b = 0; b < 4; ++b) {
                const T* qb = q + b * stride + r;
                for (i64 l = 0; l < LANES; ++l) acc[a][b][l] += pa[l] * qb[l];
            }
        }
    }
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 4; ++b) {
            double s = 0.0;
            for (i64 l = 0; l < LANES; ++l) s += static_cast<double>(acc[a][b][l]);
            out[a * 4 + b] = s;
        }
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
                for (i64 q = 0; q < run; ++q) {
                    const T* src = base + q * ss;
                    for (i64 ch = 0; ch < c; ++ch) buf[ch * CHUNK + j + q] = src[ch * sc] - r[ch];
                }
            }
            j += run;
        }
        // s: plain float64 sums of the shifted values
        for (i64 ch = 0; ch < c; ++ch) {
            const T* d = buf.data() + ch * CHUNK;
            double acc = 0.0;
            for (i64 j = 0; j < len; ++j) acc += static_cast<double>(d[j]);
            sums[c * w + ch] += acc;
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
