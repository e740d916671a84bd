// The hot loops of the fused channel reduction (included by reduce.cpp only).
//
// Two shapes of block: `rows` contiguous runs of one channel (channels first), and tiles of channels-last
// rows. Each is reduced while in cache: pass 1 gives min, max, zero count and a mean estimate (and the
// threshold counts follow); pass 2 gives Σd and Σd² of d = x − m̃ in float64, m̃ the mean estimate.
// Both take Σd and Σd² in pass 1 already, around a shift from a few of their values, and need pass 2 only
// when that shift is far from their mean (first_pass_shift, tile_shift).
// A block whose pass-1 sum is not finite holds a NaN or an Inf (or values near the float limit) and is
// redone with masks. The hot functions carry AVX-512/AVX2/baseline clones (LS_CLONES).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "common.hpp"
#include "pow2_pairs.hpp"

namespace ls {
namespace {

constexpr i64 kBlock = 4096;       // elements per run block (16 KiB of float32): later passes re-read it from L1
constexpr i64 kTileBlock = 32768;  // elements per channels-last block (128 KiB of float32, in L2)
constexpr i64 kTile = 256;         // channels per tile of a channels-last block
constexpr int kLanes = 16;         // independent accumulators: no add-latency chain in the hot loops

template <class E> using cnt_t = std::conditional_t<sizeof(E) == 4, std::int32_t, i64>;

// Chan et al. (1979), eq. 2.1: M2 = M2a + M2b + δ²·na·nb/(na + nb), δ = mean_b − mean_a.
// A mean is kept as ref + rel, ref being a value of the data (a block's shift) and rel small: then
// δ = (ref_b − ref_a) + (rel_b − rel_a) keeps the digits that a float64 mean of 1e8 ± 1e-4 data
// would round away. Counts are carried as float64 while accumulating (exact below 2**53).
inline void chan_merge(double& n, double& ref, double& rel, double& m2, double nb, double ref_b, double rel_b,
                       double m2_b) {
    if (nb == 0) return;
    if (n == 0) {
        n = nb, ref = ref_b, rel = rel_b, m2 = m2_b;
        return;
    }
    const double total = n + nb;
    const double delta = (ref_b - ref) + (rel_b - rel);
    const double w_b = nb / total;
    rel += delta * w_b;
    m2 += m2_b + delta * delta * n * w_b;
    n = total;
}

// Largest value of type E that is ≤ t: for x of type E, (x > t) ⇔ (x > round_down(t)), so the
// threshold comparison is exact without converting every element to float64.
template <class E>
E round_down(double t) {
    E f = static_cast<E>(t);
    if (static_cast<double>(f) > t) f = std::nextafter(f, -std::numeric_limits<E>::infinity());
    return f;
}

// One channel's statistics over a set of elements.
struct Partial {
    i64 n = 0, zeros = 0, nan = 0, inf = 0;
    double ref = 0, rel = 0, m2 = 0;  // mean = ref + rel
    double min = std::numeric_limits<double>::infinity();
    double max = -std::numeric_limits<double>::infinity();
};

// (Σd, Σd²) of d = x − shift → mean − shift and M2 of n values.
inline void shifted_moments(double sd, double sq, i64 n, double& rel, double& m2) {
    const double dn = static_cast<double>(n);
    rel = sd / dn;
    m2 = std::max(0.0, sq - sd * sd / dn);
}

// ---- hot loops: one channel, `rows` contiguous runs of `len` values, run r at x + r·stride -----------
//
// Lane accumulators are in the compute type E (float32 for float32/half inputs) and are flushed into
// float64 lanes after at most kFlush values per lane: a float32 partial sums at most 16 terms (relative
// error ≤ 16·2⁻²⁴ ≈ 1e-6 of the sum of magnitudes, in practice ~1e-7), and float64 carries the rest.
// Half as wide as float64 lanes and no conversion per element: the float32 path runs at twice the rate.
constexpr i64 kFlush = 16;                 // values per lane before a flush into float64
constexpr i64 kChunk = kFlush * kLanes;    // values per flush over all lanes

template <class E>
LS_INLINE void flush_lanes(E* part, double* total) {
#pragma omp simd
    for (int j = 0; j < kLanes; ++j) total[j] += static_cast<double>(part[j]), part[j] = E(0);
}

template <class E>
struct Pass1 {
    double sum;  // Σ of the run sums
    E lo, hi;
    i64 zeros;
};

// The lanes of a run: [0, full) in groups of kLanes (lane j holds positions ≡ j mod kLanes), then the
// tail, position full + j in lane j. Chunks of kChunk values start at multiples of kChunk.
LS_INLINE i64 full_lanes(i64 len) { return len - len % kLanes; }

// Σ of kLanes lanes by a fixed pairwise tree (written out: no compiler may reorder it), in E; zeroes
// the lanes. A run's sum is the float64 sum of its chunks' trees: the same additions in every path.
template <class E>
LS_INLINE double tree_sum(E* b) {
    for (int w = kLanes / 2; w >= 1; w /= 2) {
#pragma omp simd
        for (int j = 0; j < w; ++j) b[j] += b[j + w];
    }
    const double total = static_cast<double>(b[0]);
    for (int j = 0; j < kLanes; ++j) b[j] = E(0);
    return total;
}

// Pass 1: Σx of each run (in run_sum's order of additions: a run's sum depends on the run alone), min,
// max, exact zeros, the counts above the first Thr (0, 1 or 2) thresholds, and Σd, Σd² of d = x − shift
// (see first_pass_shift).
// Tail = false: len is a multiple of kLanes (no tail loop).
template <class E, bool Tail, int Thr>
LS_INLINE Pass1<E> runs_pass1(const E* x, i64 rows, i64 stride, i64 len, const E* thr, i64* above,
                              double* row_sum, E shift, double& sd, double& sq, LineAhead& ahead_state) {
    LineAhead ahead = ahead_state;  // a local copy: its pointers stay in registers (see LineAhead)
    E a[kLanes] = {}, q[kLanes] = {};
    double A[kLanes] = {}, Q[kLanes] = {};
    E b[kLanes] = {}, lo[kLanes], hi[kLanes];
    cnt_t<E> z[kLanes] = {}, c0[kLanes] = {}, c1[kLanes] = {};
    for (int j = 0; j < kLanes; ++j) lo[j] = std::numeric_limits<E>::infinity(), hi[j] = -lo[j];
    const E t0 = Thr > 0 ? thr[0] : E(0), t1 = Thr > 1 ? thr[1] : E(0);
    const i64 full = full_lanes(len);
    double total = 0;
    const bool gaps = rows > 1 && stride != len;  // runs apart (e.g. one channel of many samples)
    for (i64 r = 0; r < rows; ++r) {
        const E* row = x + r * stride;
        // The next run starts on another page, where the hardware prefetchers do not follow: fetch it
        // line by line while this run is summed (runs of a 32×32 map and longer read twice as fast).
        const char* next = gaps && r + 1 < rows ? reinterpret_cast<const char*>(row + stride) : nullptr;
        double sum = 0;
        for (i64 i = 0; i < full;) {
            const i64 end = std::min(full, i + kChunk);
            for (; i < end; i += kLanes) {
                const E* xi = row + i;
                if (next) {
                    __builtin_prefetch(next + i * sizeof(E));
                    if constexpr (sizeof(E) * kLanes > 64) __builtin_prefetch(next + i * sizeof(E) + 64);
                }
                ahead.step();
#pragma omp simd
                for (int j = 0; j < kLanes; ++j) {
                    const E v = xi[j];
                    b[j] += v;
                    lo[j] = v < lo[j] ? v : lo[j];
                    hi[j] = v > hi[j] ? v : hi[j];
                    z[j] += (v == E(0));
                    if constexpr (Thr > 0) c0[j] += (v > t0);
                    if constexpr (Thr > 1) c1[j] += (v > t1);
                    const E d = v - shift;
                    a[j] += d;
                    q[j] += d * d;
                }
            }
            sum += tree_sum(b);
            flush_lanes(a, A), flush_lanes(q, Q);  // a chunk is ≤ kFlush values per lane
        }
        if constexpr (Tail) {
            if (full < len) {
                for (i64 i = full, j = 0; i < len; ++i, ++j) {
                    const E v = row[i];
                    b[j] += v, lo[j] = v < lo[j] ? v : lo[j], hi[j] = v > hi[j] ? v : hi[j];
                    z[j] += (v == E(0));
                    if constexpr (Thr > 0) c0[j] += (v > t0);
                    if constexpr (Thr > 1) c1[j] += (v > t1);
                    const E d = v - shift;
                    a[j] += d, q[j] += d * d;
                }
                sum += tree_sum(b);
                flush_lanes(a, A), flush_lanes(q, Q);
            }
        }
        row_sum[r] = sum, total += sum;
    }
    ahead_state = ahead;
    sd = 0, sq = 0;
    for (int j = 0; j < kLanes; ++j) sd += A[j], sq += Q[j];
    Pass1<E> p{total, lo[0], hi[0], 0};
    i64 n0 = 0, n1 = 0;
    for (int j = 0; j < kLanes; ++j) {
        p.zeros += z[j], n0 += c0[j], n1 += c1[j];
        p.lo = lo[j] < p.lo ? lo[j] : p.lo;
        p.hi = hi[j] > p.hi ? hi[j] : p.hi;
    }
    if constexpr (Thr > 0) above[0] += n0;
    if constexpr (Thr > 1) above[1] += n1;
    return p;
}

// Counts of x > th0 and (when Two) x > th1 in one sweep; integer counts, so the order is free.
template <class E, bool Two>
LS_INLINE void runs_count_above(const E* x, i64 rows, i64 stride, i64 len, E th0, E th1, i64& n0, i64& n1) {
    cnt_t<E> c0[kLanes] = {}, c1[kLanes] = {};
    i64 t0 = 0, t1 = 0;
    for (i64 r = 0; r < rows; ++r) {
        const E* row = x + r * stride;
        i64 i = 0;
        for (; i + kLanes <= len; i += kLanes) {
            const E* xi = row + i;
#pragma omp simd
            for (int j = 0; j < kLanes; ++j) {
                c0[j] += (xi[j] > th0);
                if constexpr (Two) c1[j] += (xi[j] > th1);
            }
        }
        for (; i < len; ++i) {
            t0 += (row[i] > th0);
            if constexpr (Two) t1 += (row[i] > th1);
        }
    }
    for (int j = 0; j < kLanes; ++j) t0 += c0[j], t1 += c1[j];
    n0 += t0;
    if constexpr (Two) n1 += t1;
}

// Pass 2: Σd and Σd² over the runs (d = x − shift, shift a value of type E).
template <class E, bool Tail>
LS_INLINE void runs_pass2(const E* x, i64 rows, i64 stride, i64 len, E shift, double& sd, double& sq,
                          LineAhead& ahead_state) {
    LineAhead ahead = ahead_state;  // a local copy: its pointers stay in registers (see LineAhead)
    E a[kLanes] = {}, q[kLanes] = {};
    double A[kLanes] = {}, Q[kLanes] = {};
    i64 pending = 0;  // values in a, q since their last flush
    const i64 full = full_lanes(len);
    for (i64 r = 0; r < rows; ++r) {
        const E* row = x + r * stride;
        for (i64 i = 0; i < full;) {
            const i64 end = std::min(full, i + kChunk);
            if (pending + (end - i) > kChunk) flush_lanes(a, A), flush_lanes(q, Q), pending = 0;
            pending += end - i;
            for (; i < end; i += kLanes) {
                const E* xi = row + i;
                ahead.step();
#pragma omp simd
                for (int j = 0; j < kLanes; ++j) {
                    const E d = xi[j] - shift;
                    a[j] += d;
                    q[j] += d * d;
                }
            }
        }
        if constexpr (Tail) {
            if (full < len) {
                if (pending + (len - full) > kChunk) flush_lanes(a, A), flush_lanes(q, Q), pending = 0;
                pending += len - full;
                for (i64 i = full, j = 0; i < len; ++i, ++j) {
                    const E d = row[i] - shift;
                    a[j] += d, q[j] += d * d;
                }
            }
        }
    }
    flush_lanes(a, A), flush_lanes(q, Q);
    ahead_state = ahead;
    sd = 0, sq = 0;
    for (int j = 0; j < kLanes; ++j) sd += A[j], sq += Q[j];
}

// Σ of the finite values of one run and their count, in runs_pass1's order of additions: equal to its
// Σx when the run is finite.
template <class E>
void run_sum(const E* row, i64 len, double& sum, i64& count) {
    E b[kLanes] = {};
    double B = 0;
    i64 n = 0;
    const i64 full = full_lanes(len);
    auto add = [&](i64 i, int j) {
        const E v = row[i];
        const bool fin = std::isfinite(v);
        b[j] += fin ? v : E(0), n += fin;
    };
    for (i64 i = 0; i < full;) {
        const i64 end = std::min(full, i + kChunk);
        for (; i < end; i += kLanes)
            for (int j = 0; j < kLanes; ++j) add(i + j, j);
        B += tree_sum(b);
    }
    if (full < len) {
        for (i64 i = full, j = 0; i < len; ++i, ++j) add(i, static_cast<int>(j));
        B += tree_sum(b);
    }
    if (!std::isfinite(B)) {  // finite values whose float32 partial sums overflow: a float64 sum
        B = 0;
        for (i64 i = 0; i < len; ++i)
            if (std::isfinite(row[i])) B += static_cast<double>(row[i]);
    }
    sum = B;
    count = n;
}

template <class E, bool Tail>
LS_INLINE Pass1<E> runs_pass1_thr(const E* x, i64 rows, i64 stride, i64 len, const E* thr, int num_thr,
                                  i64* above, double* row_sum, E shift, double& sd, double& sq, LineAhead& ahead) {
    if (num_thr == 0) return runs_pass1<E, Tail, 0>(x, rows, stride, len, thr, above, row_sum, shift, sd, sq, ahead);
    if (num_thr == 1) return runs_pass1<E, Tail, 1>(x, rows, stride, len, thr, above, row_sum, shift, sd, sq, ahead);
    return runs_pass1<E, Tail, 2>(x, rows, stride, len, thr, above, row_sum, shift, sd, sq, ahead);
}

// The shift of pass 1's moments: the mean of kLanes values (or all, when fewer) from the middle of the
// block's first run of len values, a value of type E near the block's mean for most data. Σd² − (Σd)²/n
// then loses to cancellation a factor 1 + (mean − shift)²/var of the lane sums' relative error:
// one_pass_moments accepts the result when that factor is at most 1 + kShiftRange², else a second pass
// sums around the block's mean. The middle, not the start: the first row of a feature map is its
// border, which a padded convolution shifts (the blocks of a ResNet-18 batch fell back 7–11% of the
// time with the first values, under 1% with the middle ones).
template <class E>
LS_INLINE E first_pass_shift(const E* x, i64 len) {
    const i64 k = std::min<i64>(len, kLanes);
    const E* mid = x + (len - k) / 2;
    E s = E(0);
    for (i64 j = 0; j < k; ++j) s += mid[j];
    return k > 0 ? s / static_cast<E>(k) : E(0);
}

constexpr double kShiftRange = 1.0;  // |mean − shift| ≤ kShiftRange·σ: pass 1's moments are kept

// Pass 1's moments around shift as (rel, m2), when finite and the shift lies close enough to the mean.
inline bool one_pass_moments(double sd, double sq, i64 n, double& rel, double& m2) {
    if (!std::isfinite(sd) || !std::isfinite(sq)) return false;
    shifted_moments(sd, sq, n, rel, m2);
    return rel * rel * static_cast<double>(n) <= kShiftRange * kShiftRange * m2;
}

// The rest of runs_fast after pass 1 (r, and Σd, Σd² around first_shift): thresholds past the first two,
// the moments (pass 1's, or a pass 2 around the mean), the block's Partial.
template <class E>
LS_INLINE bool runs_fast_rest(const E* x, i64 rows, i64 stride, i64 len, const E* thr, int num_thr, Partial& p,
                              i64* above, LineAhead& ahead, const Pass1<E>& r, E first_shift, double sd1,
                              double sq1) {
    const bool tail = len % kLanes != 0;
    if (!std::isfinite(r.sum)) {  // a NaN or ±Inf (or a sum past the float limit): undo the counts
        for (int t = 0; t < std::min(num_thr, 2); ++t) above[t] = 0;
        return false;
    }
    int t = 2;
    for (; t + 2 <= num_thr; t += 2)
        runs_count_above<E, true>(x, rows, stride, len, thr[t], thr[t + 1], above[t], above[t + 1]);
    if (t < num_thr) runs_count_above<E, false>(x, rows, stride, len, thr[t], thr[t], above[t], above[t]);
    const i64 n = rows * len;
    double rel = 0, m2 = 0;
    if (one_pass_moments(sd1, sq1, n, rel, m2)) {
        p.n = n, p.zeros = r.zeros, p.min = r.lo, p.max = r.hi;
        p.ref = static_cast<double>(first_shift), p.rel = rel, p.m2 = m2;
        return true;
    }
    // pass 2 around the shift, a value of type E near the mean: d = x − shift is exact where x is within
    // a factor two of it (Sterbenz), which is every x when the spread is small next to the mean
    const E shift = static_cast<E>(r.sum / static_cast<double>(n));
    double sd = 0, sq = 0;
    if (tail) runs_pass2<E, true>(x, rows, stride, len, shift, sd, sq, ahead);
    else runs_pass2<E, false>(x, rows, stride, len, shift, sd, sq, ahead);
    // finite data whose squares overflow the compute type (|x − mean| ≳ 1e19 in float32): the masked
    // path, in float64, takes the block
    if (!std::isfinite(sq) || !std::isfinite(sd)) {
        std::fill_n(above, num_thr, 0);
        return false;
    }
    p.n = n, p.zeros = r.zeros, p.min = r.lo, p.max = r.hi;
    p.ref = static_cast<double>(shift);
    shifted_moments(sd, sq, n, p.rel, p.m2);
    return true;
}

// Fast path over the runs; false when they hold a non-finite value (nothing written then).
// row_sums[r] receives the sum of run r.
template <class E>
LS_INLINE bool runs_fast_impl(const E* x, i64 rows, i64 stride, i64 len, const E* thr, int num_thr, Partial& p,
                              i64* above, double* row_sums, LineAhead& ahead) {
    const bool tail = len % kLanes != 0;
    const E first_shift = first_pass_shift(x, len);
    double sd1 = 0, sq1 = 0;
    const Pass1<E> r =
        tail ? runs_pass1_thr<E, true>(x, rows, stride, len, thr, num_thr, above, row_sums, first_shift, sd1, sq1, ahead)
             : runs_pass1_thr<E, false>(x, rows, stride, len, thr, num_thr, above, row_sums, first_shift, sd1, sq1, ahead);
    return runs_fast_rest(x, rows, stride, len, thr, num_thr, p, above, ahead, r, first_shift, sd1, sq1);
}

#ifdef LS_POW2_AVX512
// Pass 1 of float32 runs whose length is a multiple of kLanes, in AVX-512 intrinsics, that also feeds
// every vector to the fused histogram's counter: the histogram then needs no read of the block of its
// own, and its counting (bound by the increments' loads and stores) overlaps this pass's vector work.
// The additions are runs_pass1's (lanes, chunks of kChunk values, the tree of tree_sum, the float64
// lanes of Σd and Σd² and their sum in lane order): the same results, bit for bit. (Inlining the counter
// into runs_pass1's lane loops instead spilled both to the stack: twice as slow.)
template <int Thr>
LS_AVX512 LS_INLINE Pass1<float> runs_pass1_counted(const float* x, i64 rows, i64 stride, i64 len, const float* thr,
                                                    i64* above, double* row_sum, float shift, double& sd, double& sq,
                                                    LineAhead& ahead_state, const pow2::PairGrid& pg,
                                                    const pow2::Table& pt, pow2::PairBuffers& pb) {
    pow2::PairState st;  // in registers: see pow2::PairState
    LineAhead ahead = ahead_state;
    const __m512 sh = _mm512_set1_ps(shift), zero = _mm512_setzero_ps();
    const __m512 t0 = _mm512_set1_ps(Thr > 0 ? thr[0] : 0.0f), t1 = _mm512_set1_ps(Thr > 1 ? thr[1] : 0.0f);
    const __m512i one = _mm512_set1_epi32(1);
    __m512 lo = _mm512_set1_ps(std::numeric_limits<float>::infinity()), hi = _mm512_sub_ps(zero, lo);
    __m512i z = _mm512_setzero_si512(), c0 = z, c1 = z;
    __m512d A0 = _mm512_setzero_pd(), A1 = A0, Q0 = A0, Q1 = A0;  // float64 lanes 0–7 and 8–15
    double total = 0;
    const bool gaps = rows > 1 && stride != len;
    for (i64 r = 0; r < rows; ++r) {
        const float* row = x + r * stride;
        const char* next = gaps && r + 1 < rows ? reinterpret_cast<const char*>(row + stride) : nullptr;
        double sum = 0;
        for (i64 i = 0; i < len;) {
            const i64 end = std::min(len, i + kChunk);
            __m512 b = zero, a = zero, q = zero;
            for (; i < end; i += kLanes) {
                if (next) __builtin_prefetch(next + i * sizeof(float));
                ahead.step();
                const __m512 v = _mm512_loadu_ps(row + i);
                b = _mm512_add_ps(b, v);
                lo = _mm512_min_ps(v, lo);  // v < lo ? v : lo, as runs_pass1
                hi = _mm512_max_ps(v, hi);
                z = _mm512_mask_add_epi32(z, _mm512_cmp_ps_mask(v, zero, _CMP_EQ_OQ), z, one);
                if constexpr (Thr > 0) c0 = _mm512_mask_add_epi32(c0, _mm512_cmp_ps_mask(v, t0, _CMP_GT_OQ), c0, one);
                if constexpr (Thr > 1) c1 = _mm512_mask_add_epi32(c1, _mm512_cmp_ps_mask(v, t1, _CMP_GT_OQ), c1, one);
                const __m512 d = _mm512_sub_ps(v, sh);
                a = _mm512_add_ps(a, d);
                q = _mm512_add_ps(q, _mm512_mul_ps(d, d));
                pow2::pair_push(v, 0xffff, true, pg, pt, pb, st);
            }
            // tree_sum: lanes j + 8, then j + 4, j + 2, j + 1 added into lane j
            const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
            const __m128 b4 = _mm_add_ps(_mm256_castps256_ps128(b8), _mm256_extractf128_ps(b8, 1));
            const __m128 b2 = _mm_add_ps(b4, _mm_movehl_ps(b4, b4));
            sum += static_cast<double>(_mm_cvtss_f32(_mm_add_ss(b2, _mm_shuffle_ps(b2, b2, 1))));
            A0 = _mm512_add_pd(A0, _mm512_cvtps_pd(_mm512_castps512_ps256(a)));  // flush_lanes
            A1 = _mm512_add_pd(A1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)));
            Q0 = _mm512_add_pd(Q0, _mm512_cvtps_pd(_mm512_castps512_ps256(q)));
            Q1 = _mm512_add_pd(Q1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(q, 1)));
        }
        row_sum[r] = sum, total += sum;
    }
    pow2::pair_finish(pg, pt, pb, st);
    ahead_state = ahead;
    alignas(64) double A[kLanes], Q[kLanes];
    _mm512_store_pd(A, A0), _mm512_store_pd(A + 8, A1), _mm512_store_pd(Q, Q0), _mm512_store_pd(Q + 8, Q1);
    sd = 0, sq = 0;
    for (int j = 0; j < kLanes; ++j) sd += A[j], sq += Q[j];
    alignas(64) float los[kLanes], his[kLanes];
    _mm512_store_ps(los, lo), _mm512_store_ps(his, hi);
    Pass1<float> p{total, los[0], his[0], _mm512_reduce_add_epi32(z)};
    for (int j = 0; j < kLanes; ++j) {
        p.lo = los[j] < p.lo ? los[j] : p.lo;
        p.hi = his[j] > p.hi ? his[j] : p.hi;
    }
    if constexpr (Thr > 0) above[0] += _mm512_reduce_add_epi32(c0);
    if constexpr (Thr > 1) above[1] += _mm512_reduce_add_epi32(c1);
    return p;
}

// runs_fast (or short_runs_fast: the same results) for float32 runs of a multiple of kLanes values, whose
// pass 1 also counts them into the fused histogram's table (grid a float32 grid, see pow2::float32_grid), finite or
// not: the caller counts nothing more.
LS_AVX512 bool runs_fast_counted(const float* x, i64 rows, i64 stride, i64 len, const float* thr, int num_thr,
                                 Partial& p, i64* above, double* row_sums, LineAhead& ahead,
                                 const Pow2Counter& grid, i64* table) {
    pow2::PairBuffers buffers;
    const pow2::PairGrid pg = pow2::pair_grid(pow2::make_grid<float>(grid), pow2::zero_slot(grid));
    const pow2::Table pt = pow2::layout(table, grid.bins);
    const float first_shift = first_pass_shift(x, len);
    double sd1 = 0, sq1 = 0;
    const Pass1<float> r =
        num_thr == 0   ? runs_pass1_counted<0>(x, rows, stride, len, thr, above, row_sums, first_shift, sd1, sq1, ahead, pg, pt, buffers)
        : num_thr == 1 ? runs_pass1_counted<1>(x, rows, stride, len, thr, above, row_sums, first_shift, sd1, sq1, ahead, pg, pt, buffers)
                       : runs_pass1_counted<2>(x, rows, stride, len, thr, above, row_sums, first_shift, sd1, sq1, ahead, pg, pt, buffers);
    return runs_fast_rest(x, rows, stride, len, thr, num_thr, p, above, ahead, r, first_shift, sd1, sq1);
}
#endif

// ahead: lines fetched during pass 1 (and pass 2, when it runs; see LineAhead), a line per 16 values
LS_CLONES bool runs_fast(const float* x, i64 rows, i64 stride, i64 len, const float* thr, int num_thr, Partial& p,
                         i64* above, double* row_sums, LineAhead& ahead) {
    return runs_fast_impl(x, rows, stride, len, thr, num_thr, p, above, row_sums, ahead);
}
LS_CLONES bool runs_fast(const double* x, i64 rows, i64 stride, i64 len, const double* thr, int num_thr,
                         Partial& p, i64* above, double* row_sums, LineAhead& ahead) {
    return runs_fast_impl(x, rows, stride, len, thr, num_thr, p, above, row_sums, ahead);
}
// ---- hot loop: many runs of at most kShortLen float32 values (short runs, see run_box) -------------
//
// A run of len ≤ kShortLen values is a few vectors of lanes (lanes past len masked out), so the loops
// are over runs, not chunks of positions: min, max, zeros and threshold counts stay in lanes across
// runs (runs_pass1 takes the end of each short run through its scalar tail loop and every run through
// its chunk bookkeeping), and each run's sum is formed with the additions of runs_pass1 and tree_sum:
// bitwise the sum every other path gives. Written with vector types and integer masks: the compiler
// keeps these accumulators in registers (array lanes with conditional expressions stayed in memory).
using f16v = float __attribute__((vector_size(64)));
using f8v = float __attribute__((vector_size(32)));
using f4v = float __attribute__((vector_size(16)));
using i16v = std::int32_t __attribute__((vector_size(64)));

struct ShortLanes {  // lane accumulators of pass 1
    f16v lo, hi;
    i16v zeros, c0, c1;
};

constexpr i64 kShortLen = 4 * kLanes;  // runs up to this long take short_runs_fast (float32)

// The tree of tree_sum over the lanes of b, in float32, as a float64.
LS_INLINE double vector_tree(const f16v& b) {
    const f8v b8 = __builtin_shufflevector(b, b, 0, 1, 2, 3, 4, 5, 6, 7) +
                   __builtin_shufflevector(b, b, 8, 9, 10, 11, 12, 13, 14, 15);
    const f4v b4 = __builtin_shufflevector(b8, b8, 0, 1, 2, 3) + __builtin_shufflevector(b8, b8, 4, 5, 6, 7);
    return static_cast<double>((b4[0] + b4[2]) + (b4[1] + b4[3]));
}

// Float64 lane sums of the short-run loops, as two vectors of 8 (a double[16] array stayed in memory, and
// its lane-by-lane flush was a seventh of the time of runs of 64 values): the same additions, lane by lane.
using d8v = double __attribute__((vector_size(64)));
struct LaneSums {
    d8v lo = {}, hi = {};
    LS_INLINE void add(const f16v& v) {
        lo += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), d8v);
        hi += __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), d8v);
    }
    // Σ of the lanes from lane 0 up (the order of the array loop it replaces)
    LS_INLINE double total() const {
        double t = 0;
        for (int j = 0; j < 8; ++j) t += lo[j];
        for (int j = 0; j < 8; ++j) t += hi[j];
        return t;
    }
};

// Pass 1 over the short runs: Σ of each run (row_sums), min, max, zeros and the counts above the
// first Thr (0, 1 or 2) thresholds. A run is `full` whole vectors then, when tail > 0, one vector of
// which the first `tail` lanes are the run's (mask); `lanes(r)` gives run r readable that far.
// The run's sum, as runs_pass1 forms it: lanes b = 0 + x₀ + x₁ + … over the whole vectors, their tree,
// then the tree of the tail's lanes (0 + x), each tree added into a float64 sum from 0.
// Also Σd and Σd² of d = x − shift (see first_pass_shift), flushed into float64 every per_flush runs.
template <int Thr, class Lanes>
LS_INLINE double short_pass1(i64 rows, i64 full, i64 tail, const i16v& mask, const float* thr, Lanes lanes,
                             ShortLanes& acc, double* row_sums, float shift, i64 per_flush, double& sd,
                             double& sq, LineAhead& ahead_state) {
    LineAhead ahead = ahead_state;  // a local copy: its pointers stay in registers (see LineAhead)
    f16v a = {}, q = {};
    LaneSums A, Q;
    i64 flush_in = per_flush;
    const i16v inf_bits = (i16v)(f16v{} + std::numeric_limits<float>::infinity());
    const i16v ninf_bits = (i16v)(f16v{} - std::numeric_limits<float>::infinity());
    const float t0 = Thr > 0 ? thr[0] : 0.0f, t1 = Thr > 1 ? thr[1] : 0.0f;
    f16v lo = acc.lo, hi = acc.hi;
    i16v z = acc.zeros, c0 = acc.c0, c1 = acc.c1;
    double total = 0;
    for (i64 r = 0; r < rows; ++r) {
        const float* row = lanes(r);
        double sum = 0;
        if (full > 0) {
            f16v b = {};
            for (i64 k = 0; k < full; ++k) {
                f16v v;
                __builtin_memcpy(&v, row + k * kLanes, sizeof(v));
                b += v;
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
                z = v == 0.0f ? z + 1 : z;  // a masked add (the mask as −1 added in a register is two)
                if constexpr (Thr > 0) c0 = v > t0 ? c0 + 1 : c0;
                if constexpr (Thr > 1) c1 = v > t1 ? c1 + 1 : c1;
                const f16v d = v - shift;
                a += d, q += d * d;
                ahead.step();
            }
            sum += vector_tree(b);
        }
        if (tail > 0) {
            f16v raw;
            __builtin_memcpy(&raw, row + full * kLanes, sizeof(raw));
            const i16v bits = (i16v)raw & mask;
            const f16v vl = (f16v)(bits | (inf_bits & ~mask)), vh = (f16v)(bits | (ninf_bits & ~mask));
            lo = vl < lo ? vl : lo;
            hi = vh > hi ? vh : hi;
            z -= (raw == 0.0f) & mask;
            if constexpr (Thr > 0) c0 -= (raw > t0) & mask;
            if constexpr (Thr > 1) c1 -= (raw > t1) & mask;
            sum += vector_tree(f16v{} + (f16v)bits);  // the lanes start at +0
            const f16v d = (f16v)((i16v)(raw - shift) & mask);
            a += d, q += d * d;
            ahead.step();
        }
        row_sums[r] = sum, total += sum;
        if (--flush_in == 0) {
            A.add(a), Q.add(q);
            a = f16v{}, q = f16v{}, flush_in = per_flush;
        }
    }
    A.add(a), Q.add(q);
    sd = A.total(), sq = Q.total();
    ahead_state = ahead;
    acc.lo = lo, acc.hi = hi, acc.zeros = z, acc.c0 = c0, acc.c1 = c1;
    return total;
}

// Fast path over rows runs of len ≤ kShortLen float32 values (run r at x + r·stride); as runs_fast
// (ahead included):
// false when they hold a non-finite value or squares past the float limit (nothing written then).
LS_CLONES bool short_runs_fast(const float* x, i64 rows, i64 stride, i64 len, const float* thr, int num_thr,
                               Partial& p, i64* above, double* row_sums, LineAhead& ahead_state) {
    const i64 full = len / kLanes, tail = len % kLanes, span = (full + (tail > 0)) * kLanes;
    i16v mask;
    for (int j = 0; j < kLanes; ++j) mask[j] = j < tail ? -1 : 0;
    ShortLanes acc;
    acc.lo = f16v{} + std::numeric_limits<float>::infinity(), acc.hi = -acc.lo;
    acc.zeros = i16v{}, acc.c0 = i16v{}, acc.c1 = i16v{};
    // Run r is read as whole vectors: past its end lie the next runs when stride ≥ span; the last run
    // (and runs closer than that) are read from a zero-padded copy.
    float pad[kShortLen] = {};
    auto lanes = [&](i64 r) -> const float* {
        const float* row = x + r * stride;
        if (tail == 0 || (stride >= span && r + 1 < rows)) return row;
        for (i64 j = 0; j < len; ++j) pad[j] = row[j];
        return pad;
    };
    const i64 per_flush = kFlush / (span / kLanes);  // runs per flush: ≤ kFlush values per lane
    const float first_shift = first_pass_shift(lanes(0), len);
    double sd1 = 0, sq1 = 0;
    const double total =
        num_thr == 0   ? short_pass1<0>(rows, full, tail, mask, thr, lanes, acc, row_sums, first_shift, per_flush, sd1, sq1, ahead_state)
        : num_thr == 1 ? short_pass1<1>(rows, full, tail, mask, thr, lanes, acc, row_sums, first_shift, per_flush, sd1, sq1, ahead_state)
                       : short_pass1<2>(rows, full, tail, mask, thr, lanes, acc, row_sums, first_shift, per_flush, sd1, sq1, ahead_state);
    if (!std::isfinite(total)) return false;
    i64 n0 = 0, n1 = 0;
    for (int j = 0; j < kLanes; ++j) n0 += acc.c0[j], n1 += acc.c1[j];
    if (num_thr > 0) above[0] += n0;
    if (num_thr > 1) above[1] += n1;
    int t = 2;
    for (; t + 2 <= num_thr; t += 2)
        runs_count_above<float, true>(x, rows, stride, len, thr[t], thr[t + 1], above[t], above[t + 1]);
    if (t < num_thr) runs_count_above<float, false>(x, rows, stride, len, thr[t], thr[t], above[t], above[t]);
    const i64 n = rows * len;
    // written only on success: the caller's masked path starts from p
    const auto extremes = [&] {
        p.n = n, p.min = acc.lo[0], p.max = acc.hi[0], p.zeros = 0;
        for (int j = 0; j < kLanes; ++j) {
            p.zeros += acc.zeros[j];
            p.min = std::min(p.min, static_cast<double>(acc.lo[j]));
            p.max = std::max(p.max, static_cast<double>(acc.hi[j]));
        }
    };
    double rel = 0, m2 = 0;
    if (one_pass_moments(sd1, sq1, n, rel, m2)) {
        extremes();
        p.ref = static_cast<double>(first_shift), p.rel = rel, p.m2 = m2;
        return true;
    }
    const float shift = static_cast<float>(total / static_cast<double>(n));
    f16v a = {}, q = {};
    LaneSums A, Q;
    LineAhead ahead = ahead_state;  // a local copy: its pointers stay in registers (see LineAhead)
    for (i64 r0 = 0; r0 < rows; r0 += per_flush) {
        const i64 r1 = std::min(rows, r0 + per_flush);
        for (i64 r = r0; r < r1; ++r) {
            const float* row = lanes(r);
            for (i64 k = 0; k < full; ++k) {
                f16v v;
                __builtin_memcpy(&v, row + k * kLanes, sizeof(v));
                ahead.step();
                const f16v d = v - shift;
                a += d, q += d * d;
            }
            if (tail > 0) {
                f16v raw;
                __builtin_memcpy(&raw, row + full * kLanes, sizeof(raw));
                ahead.step();
                const f16v d = (f16v)((i16v)(raw - shift) & mask);
                a += d, q += d * d;
            }
        }
        A.add(a), Q.add(q);
        a = f16v{}, q = f16v{};
    }
    ahead_state = ahead;
    const double sd = A.total(), sq = Q.total();
    if (!std::isfinite(sq) || !std::isfinite(sd)) {
        std::fill_n(above, num_thr, 0);
        return false;
    }
    extremes();
    p.ref = static_cast<double>(shift);
    shifted_moments(sd, sq, n, p.rel, p.m2);
    return true;
}

// Masked path: statistics of the finite values only.
template <class E>
void run_masked(const E* x, i64 len, i64 step, const E* thr, int num_thr, Partial& p, i64* above) {
    double s = 0;
    for (i64 i = 0; i < len; ++i) {
        const E v = x[i * step];
        p.zeros += (v == E(0));
        if (std::isnan(v)) {
            ++p.nan;
        } else if (std::isinf(v)) {
            ++p.inf;
        } else {
            ++p.n, s += v;
            p.min = std::min(p.min, static_cast<double>(v));
            p.max = std::max(p.max, static_cast<double>(v));
            for (int t = 0; t < num_thr; ++t) above[t] += (v > thr[t]);
        }
    }
    if (p.n == 0) return;
    const double shift = s / static_cast<double>(p.n);
    double sd = 0, sq = 0;
    for (i64 i = 0; i < len; ++i) {
        const E v = x[i * step];
        if (!std::isfinite(v)) continue;
        const double d = static_cast<double>(v) - shift;
        sd += d, sq += d * d;
    }
    p.ref = shift;
    shifted_moments(sd, sq, p.n, p.rel, p.m2);
}

// ---- hot loops: a tile of channels-last rows, x[r·ld + w] for r < rows, w < width -----------------

template <class E>
struct TileScratch {
    std::vector<E> part, part_d, part_q, eshift, lo, hi;  // part*: partials of ≤ kFlush rows; eshift: the shift
    std::vector<cnt_t<E>> zeros, above;  // above: [T, width]
    std::vector<double> sum, shift, sd, sq, rel, m2;  // block mean = shift + rel
    std::vector<double> group_sum;  // [groups, width]: Σx of each group of rows (tile_sum's order)
    std::vector<Partial> masked;    // per channel, for tiles with NaN/Inf (allocated by tile_masked)
    std::vector<i64> masked_above;  // [width, T]
    TileScratch() = default;
    TileScratch(i64 width, int num_thr) { resize(width, num_thr); }
    void resize(i64 width, int num_thr) {
        const auto w = static_cast<std::size_t>(width);
        for (auto* v : {&part, &part_d, &part_q, &eshift, &lo, &hi}) v->resize(w);
        zeros.resize(w), above.resize(w * static_cast<std::size_t>(num_thr));
        for (auto* v : {&sum, &shift, &sd, &sq, &rel, &m2}) v->resize(w);
    }
};

// Whether every value is finite: x − x is 0 for finite x and NaN for ±Inf and NaN (vectorised).
LS_INLINE bool all_finite(const double* x, i64 n) {
    double t = 0;
#pragma omp simd reduction(+ : t)
    for (i64 i = 0; i < n; ++i) t += x[i] - x[i];
    return t == 0;
}

// The rows of a tile are taken in chunks of kFlush: per-channel partials in the compute type over one
// chunk, then added into float64 (as the run lanes are, see kFlush).
template <class E>
LS_INLINE void flush_channels(E* part, double* total, i64 width) {
#pragma omp simd
    for (i64 w = 0; w < width; ++w) total[w] += static_cast<double>(part[w]), part[w] = E(0);
}

// The shift of a tile's one-pass moments, per channel: the mean of kFlush rows (or all, when fewer)
// from the middle of the tile (see first_pass_shift for why the middle), a value of type E. A shift
// that is not finite (a NaN among those rows, or a sum past the float limit) makes Σd not finite and
// the tile takes the second pass or the masked path.
template <class E>
LS_INLINE void tile_shift(const E* x, i64 rows, i64 ld, i64 width, E* shift) {
    const i64 k = std::min(rows, kFlush);
    const E* mid = x + (rows - k) / 2 * ld;
    const E inv = E(1) / static_cast<E>(k);
    if (k == kFlush) {  // the inner loop unrolled: the channels in vectors
#pragma omp simd
        for (i64 w = 0; w < width; ++w) {
            E s = E(0);
#pragma GCC unroll 16
            for (int j = 0; j < kFlush; ++j) s += mid[j * ld + w];
            shift[w] = s * inv;
        }
        return;
    }
    std::fill_n(shift, width, E(0));
    for (i64 j = 0; j < k; ++j) {  // the same additions, a row at a time
        const E* row = mid + j * ld;
#pragma omp simd
        for (i64 w = 0; w < width; ++w) shift[w] += row[w];
    }
#pragma omp simd
    for (i64 w = 0; w < width; ++w) shift[w] *= inv;
}

// Σx (float64), min, max, zeros and the counts above the first Thr thresholds per channel, and Σd, Σd²
// of d = x − eshift, in one read of the tile. The rows come in spans of span rows (whole samples; or the
// whole tile), each taken in chunks of kFlush rows from its first: a chunk's partials are added into
// float64, its Σx into the block's and into its span's sums ss[k·width, (k + 1)·width) — for a span of
// one sample, tile_pass2's sums of the sample (the same additions). A whole chunk is one sweep over the
// channels, the chunk's accumulators in registers (loaded and stored once per kFlush values of a channel;
// sweeps of four rows, as a short chunk still takes, stored six vectors per four rows and were bound by
// the stores).
template <class E, int Thr>
LS_INLINE void tile_pass1(const E* x, i64 rows, i64 ld, i64 width, const E* thr, TileScratch<E>& ts, double* ss,
                          i64 span) {
    E *s = ts.part.data(), *pd = ts.part_d.data(), *pq = ts.part_q.data(), *lo = ts.lo.data(), *hi = ts.hi.data();
    const E* shift = ts.eshift.data();
    double *total = ts.sum.data(), *tsd = ts.sd.data(), *tsq = ts.sq.data();
    cnt_t<E>* z = ts.zeros.data();
    cnt_t<E>* c0 = ts.above.data();
    cnt_t<E>* c1 = Thr > 1 ? c0 + width : c0;
    const E t0 = Thr > 0 ? thr[0] : E(0), t1 = Thr > 1 ? thr[1] : E(0);
    for (i64 r0 = 0, end = 0; r0 < rows; r0 = std::min(end, r0 + kFlush)) {
        if (r0 == end) end = std::min(rows, r0 + span);  // the next span
        const i64 r1 = std::min(end, r0 + kFlush);
        double* gsum = ss + r0 / span * width;
        if (r1 - r0 == kFlush) {  // a whole chunk per sweep, its partials in registers from 0
            const E* p = x + r0 * ld;
#pragma omp simd
            for (i64 w = 0; w < width; ++w) {
                const E sh = shift[w];
                E sc = E(0), a = E(0), q2 = E(0), l = lo[w], h = hi[w];
                cnt_t<E> zz = z[w], a0 = c0[w], a1 = c1[w];
#pragma GCC unroll 4
                for (int q = 0; q < kFlush; q += 4) {
                    const E* pr = p + q * ld;
                    const E v0 = pr[w], v1 = pr[ld + w], v2 = pr[2 * ld + w], v3 = pr[3 * ld + w];
                    sc += (v0 + v1) + (v2 + v3);
                    const E d0 = v0 - sh, d1 = v1 - sh, d2 = v2 - sh, d3 = v3 - sh;
                    a += (d0 + d1) + (d2 + d3);
                    q2 += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
                    const E m01 = v0 < v1 ? v0 : v1, m23 = v2 < v3 ? v2 : v3, m = m01 < m23 ? m01 : m23;
                    const E n01 = v0 > v1 ? v0 : v1, n23 = v2 > v3 ? v2 : v3, n = n01 > n23 ? n01 : n23;
                    l = m < l ? m : l;
                    h = n > h ? n : h;
                    zz = v0 == E(0) ? zz + 1 : zz, zz = v1 == E(0) ? zz + 1 : zz;
                    zz = v2 == E(0) ? zz + 1 : zz, zz = v3 == E(0) ? zz + 1 : zz;
                    if constexpr (Thr > 0) {
                        a0 = v0 > t0 ? a0 + 1 : a0, a0 = v1 > t0 ? a0 + 1 : a0;
                        a0 = v2 > t0 ? a0 + 1 : a0, a0 = v3 > t0 ? a0 + 1 : a0;
                    }
                    if constexpr (Thr > 1) {
                        a1 = v0 > t1 ? a1 + 1 : a1, a1 = v1 > t1 ? a1 + 1 : a1;
                        a1 = v2 > t1 ? a1 + 1 : a1, a1 = v3 > t1 ? a1 + 1 : a1;
                    }
                }
                lo[w] = l, hi[w] = h, z[w] = zz;
                if constexpr (Thr > 0) c0[w] = a0;
                if constexpr (Thr > 1) c1[w] = a1;
                const double dsc = static_cast<double>(sc);  // the flush (the chunk's partials started at 0)
                total[w] += dsc, gsum[w] += dsc;
                tsd[w] += static_cast<double>(a), tsq[w] += static_cast<double>(q2);
            }
            continue;
        }
        i64 r = r0;
        for (; r + 4 <= r1; r += 4) {
            const E *p0 = x + r * ld, *p1 = p0 + ld, *p2 = p1 + ld, *p3 = p2 + ld;
#pragma omp simd
            for (i64 w = 0; w < width; ++w) {
                const E v0 = p0[w], v1 = p1[w], v2 = p2[w], v3 = p3[w], sh = shift[w];
                s[w] += (v0 + v1) + (v2 + v3);
                const E d0 = v0 - sh, d1 = v1 - sh, d2 = v2 - sh, d3 = v3 - sh;
                pd[w] += (d0 + d1) + (d2 + d3);
                pq[w] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
                const E m01 = v0 < v1 ? v0 : v1, m23 = v2 < v3 ? v2 : v3, m = m01 < m23 ? m01 : m23;
                const E n01 = v0 > v1 ? v0 : v1, n23 = v2 > v3 ? v2 : v3, n = n01 > n23 ? n01 : n23;
                lo[w] = m < lo[w] ? m : lo[w];
                hi[w] = n > hi[w] ? n : hi[w];
                // counts as conditional increments: masked adds (a bool converted to an integer is a
                // mask load and an add)
                cnt_t<E> zz = z[w];
                zz = v0 == E(0) ? zz + 1 : zz, zz = v1 == E(0) ? zz + 1 : zz;
                zz = v2 == E(0) ? zz + 1 : zz, zz = v3 == E(0) ? zz + 1 : zz;
                z[w] = zz;
                if constexpr (Thr > 0) {
                    cnt_t<E> a = c0[w];
                    a = v0 > t0 ? a + 1 : a, a = v1 > t0 ? a + 1 : a, a = v2 > t0 ? a + 1 : a, a = v3 > t0 ? a + 1 : a;
                    c0[w] = a;
                }
                if constexpr (Thr > 1) {
                    cnt_t<E> a = c1[w];
                    a = v0 > t1 ? a + 1 : a, a = v1 > t1 ? a + 1 : a, a = v2 > t1 ? a + 1 : a, a = v3 > t1 ? a + 1 : a;
                    c1[w] = a;
                }
            }
        }
        for (; r < r1; ++r) {
            const E* p = x + r * ld;
#pragma omp simd
            for (i64 w = 0; w < width; ++w) {
                const E v = p[w], d = v - shift[w];
                s[w] += v, pd[w] += d, pq[w] += d * d;
                lo[w] = v < lo[w] ? v : lo[w], hi[w] = v > hi[w] ? v : hi[w], z[w] += (v == E(0));
                if constexpr (Thr > 0) c0[w] += (v > t0);
                if constexpr (Thr > 1) c1[w] += (v > t1);
            }
        }
#pragma omp simd
        for (i64 w = 0; w < width; ++w) {
            const double ds = static_cast<double>(s[w]);
            total[w] += ds, gsum[w] += ds;
            tsd[w] += static_cast<double>(pd[w]), tsq[w] += static_cast<double>(pq[w]);
            s[w] = E(0), pd[w] = E(0), pq[w] = E(0);
        }
    }
}

#ifdef LS_POW2_AVX512
// dst[0..16) += (lo8, hi8), the lanes of masks m0 (0–7) and m1 (8–15) only
LS_AVX512 LS_INLINE void add_pd16(double* dst, __mmask8 m0, __mmask8 m1, __m512d lo8, __m512d hi8) {
    _mm512_mask_storeu_pd(dst, m0, _mm512_add_pd(_mm512_maskz_loadu_pd(m0, dst), lo8));
    _mm512_mask_storeu_pd(dst + 8, m1, _mm512_add_pd(_mm512_maskz_loadu_pd(m1, dst + 8), hi8));
}

// tile_pass1<float, Thr> in AVX-512 intrinsics, 16 channels per vector: the same additions in the same
// order (bit for bit its results). GCC's vectorisation of tile_pass1 kept the sixteen row pointers of a
// chunk and several vectors on the stack; here a chunk is quads of rows at one pointer and the offsets
// ld, 2·ld, 3·ld. While a chunk is read, the lines of the next kFlush rows are fetched into L2: one
// read of the tile has little work between its loads for the hardware's prefetch to keep up (measured
// on 128 × 256 float32 tiles at a row stride of 1024, one thread: 0.63 → 0.32 ns per value from DRAM,
// 0.195 from L3, against 0.21–0.23 for the two passes this replaced).
template <int Thr>
LS_AVX512 __attribute__((noinline)) void tile_pass1_avx512(const float* x, i64 rows, i64 ld, i64 width,
                                                         const float* thr, TileScratch<float>& ts, double* ss,
                                                         i64 span) {
    float *lo = ts.lo.data(), *hi = ts.hi.data();
    const float* shift = ts.eshift.data();
    double *total = ts.sum.data(), *tsd = ts.sd.data(), *tsq = ts.sq.data();
    std::int32_t* zc = ts.zeros.data();
    std::int32_t* ac0 = ts.above.data();
    std::int32_t* ac1 = Thr > 1 ? ac0 + width : ac0;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 t0 = _mm512_set1_ps(Thr > 0 ? thr[0] : 0.0f), t1 = _mm512_set1_ps(Thr > 1 ? thr[1] : 0.0f);
    const __m512i one = _mm512_set1_epi32(1);
    const i64 ld2 = 2 * ld, ld3 = 3 * ld, ld4 = 4 * ld;
    for (i64 r0 = 0, end = 0; r0 < rows; r0 = std::min(end, r0 + kFlush)) {
        if (r0 == end) end = std::min(rows, r0 + span);  // the next span (see tile_pass1)
        const i64 n = std::min(end, r0 + kFlush) - r0;
        double* gsum = ss + r0 / span * width;
        for (i64 w = 0; w < width; w += 16) {
            const __mmask16 m = width - w >= 16 ? __mmask16(0xffff) : __mmask16((1u << (width - w)) - 1);
            const __mmask8 m0 = static_cast<__mmask8>(m), m1 = static_cast<__mmask8>(m >> 8);
            const __m512 sh = _mm512_maskz_loadu_ps(m, shift + w);
            __m512 l = _mm512_maskz_loadu_ps(m, lo + w), h = _mm512_maskz_loadu_ps(m, hi + w);
            __m512i zz = _mm512_maskz_loadu_epi32(m, zc + w), a0 = zz, a1 = zz;
            if constexpr (Thr > 0) a0 = _mm512_maskz_loadu_epi32(m, ac0 + w);
            if constexpr (Thr > 1) a1 = _mm512_maskz_loadu_epi32(m, ac1 + w);
            __m512 sc = zero, a = zero, q = zero;
            const float* pr = x + r0 * ld + w;
            {  // the lines of these channels in the next kFlush rows
                const char* pf = reinterpret_cast<const char*>(pr + n * ld);
                const i64 step = ld * static_cast<i64>(sizeof(float));
                const i64 ahead = std::min(kFlush, rows - r0 - n);
                for (i64 j = 0; j < ahead; ++j) _mm_prefetch(pf + j * step, _MM_HINT_T1);
            }
            i64 k = 0;
            for (; k + 4 <= n; k += 4, pr += ld4) {
                const __m512 v0 = _mm512_maskz_loadu_ps(m, pr), v1 = _mm512_maskz_loadu_ps(m, pr + ld);
                const __m512 v2 = _mm512_maskz_loadu_ps(m, pr + ld2), v3 = _mm512_maskz_loadu_ps(m, pr + ld3);
                sc = _mm512_add_ps(sc, _mm512_add_ps(_mm512_add_ps(v0, v1), _mm512_add_ps(v2, v3)));
                const __m512 d0 = _mm512_sub_ps(v0, sh), d1 = _mm512_sub_ps(v1, sh);
                const __m512 d2 = _mm512_sub_ps(v2, sh), d3 = _mm512_sub_ps(v3, sh);
                a = _mm512_add_ps(a, _mm512_add_ps(_mm512_add_ps(d0, d1), _mm512_add_ps(d2, d3)));
                const __m512 q01 = _mm512_add_ps(_mm512_mul_ps(d0, d0), _mm512_mul_ps(d1, d1));
                const __m512 q23 = _mm512_add_ps(_mm512_mul_ps(d2, d2), _mm512_mul_ps(d3, d3));
                q = _mm512_add_ps(q, _mm512_add_ps(q01, q23));
                // tile_pass1's selects: min(a, b) = a < b ? a : b, max(a, b) = a > b ? a : b
                const __m512 mn = _mm512_min_ps(_mm512_min_ps(v0, v1), _mm512_min_ps(v2, v3));
                const __m512 mx = _mm512_max_ps(_mm512_max_ps(v0, v1), _mm512_max_ps(v2, v3));
                l = _mm512_min_ps(mn, l), h = _mm512_max_ps(mx, h);
                zz = _mm512_mask_add_epi32(zz, _mm512_cmp_ps_mask(v0, zero, _CMP_EQ_OQ), zz, one);
                zz = _mm512_mask_add_epi32(zz, _mm512_cmp_ps_mask(v1, zero, _CMP_EQ_OQ), zz, one);
                zz = _mm512_mask_add_epi32(zz, _mm512_cmp_ps_mask(v2, zero, _CMP_EQ_OQ), zz, one);
                zz = _mm512_mask_add_epi32(zz, _mm512_cmp_ps_mask(v3, zero, _CMP_EQ_OQ), zz, one);
                if constexpr (Thr > 0) {
                    a0 = _mm512_mask_add_epi32(a0, _mm512_cmp_ps_mask(v0, t0, _CMP_GT_OQ), a0, one);
                    a0 = _mm512_mask_add_epi32(a0, _mm512_cmp_ps_mask(v1, t0, _CMP_GT_OQ), a0, one);
                    a0 = _mm512_mask_add_epi32(a0, _mm512_cmp_ps_mask(v2, t0, _CMP_GT_OQ), a0, one);
                    a0 = _mm512_mask_add_epi32(a0, _mm512_cmp_ps_mask(v3, t0, _CMP_GT_OQ), a0, one);
                }
                if constexpr (Thr > 1) {
                    a1 = _mm512_mask_add_epi32(a1, _mm512_cmp_ps_mask(v0, t1, _CMP_GT_OQ), a1, one);
                    a1 = _mm512_mask_add_epi32(a1, _mm512_cmp_ps_mask(v1, t1, _CMP_GT_OQ), a1, one);
                    a1 = _mm512_mask_add_epi32(a1, _mm512_cmp_ps_mask(v2, t1, _CMP_GT_OQ), a1, one);
                    a1 = _mm512_mask_add_epi32(a1, _mm512_cmp_ps_mask(v3, t1, _CMP_GT_OQ), a1, one);
                }
            }
            for (; k < n; ++k, pr += ld) {
                const __m512 v = _mm512_maskz_loadu_ps(m, pr), d = _mm512_sub_ps(v, sh);
                sc = _mm512_add_ps(sc, v), a = _mm512_add_ps(a, d), q = _mm512_add_ps(q, _mm512_mul_ps(d, d));
                l = _mm512_min_ps(v, l), h = _mm512_max_ps(v, h);
                zz = _mm512_mask_add_epi32(zz, _mm512_cmp_ps_mask(v, zero, _CMP_EQ_OQ), zz, one);
                if constexpr (Thr > 0) a0 = _mm512_mask_add_epi32(a0, _mm512_cmp_ps_mask(v, t0, _CMP_GT_OQ), a0, one);
                if constexpr (Thr > 1) a1 = _mm512_mask_add_epi32(a1, _mm512_cmp_ps_mask(v, t1, _CMP_GT_OQ), a1, one);
            }
            _mm512_mask_storeu_ps(lo + w, m, l), _mm512_mask_storeu_ps(hi + w, m, h);
            _mm512_mask_storeu_epi32(zc + w, m, zz);
            if constexpr (Thr > 0) _mm512_mask_storeu_epi32(ac0 + w, m, a0);
            if constexpr (Thr > 1) _mm512_mask_storeu_epi32(ac1 + w, m, a1);
            // the flush: each float32 partial added into its float64 sums
            const __m512d s0 = _mm512_cvtps_pd(_mm512_castps512_ps256(sc));
            const __m512d s1 = _mm512_cvtps_pd(_mm512_extractf32x8_ps(sc, 1));
            add_pd16(total + w, m0, m1, s0, s1);
            add_pd16(gsum + w, m0, m1, s0, s1);
            add_pd16(tsd + w, m0, m1, _mm512_cvtps_pd(_mm512_castps512_ps256(a)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)));
            add_pd16(tsq + w, m0, m1, _mm512_cvtps_pd(_mm512_castps512_ps256(q)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(q, 1)));
        }
    }
}
#endif

template <class E>
LS_INLINE void tile_count_above(const E* x, i64 rows, i64 ld, i64 width, E th, cnt_t<E>* a) {
    i64 r = 0;
    for (; r + 4 <= rows; r += 4) {
        const E *p0 = x + r * ld, *p1 = p0 + ld, *p2 = p1 + ld, *p3 = p2 + ld;
#pragma omp simd
        for (i64 w = 0; w < width; ++w) a[w] += (p0[w] > th) + (p1[w] > th) + (p2[w] > th) + (p3[w] > th);
    }
    for (; r < rows; ++r) {
        const E* p = x + r * ld;
#pragma omp simd
        for (i64 w = 0; w < width; ++w) a[w] += (p[w] > th);
    }
}

// Σd, Σd² (d = x − shift, shift per channel in E) and Σx per channel, added into ts.sd, ts.sq and
// sum; Σx in tile_sum's order of additions (quads of rows, chunks of kFlush rows from the first).
template <class E>
LS_INLINE void tile_pass2(const E* x, i64 rows, i64 ld, i64 width, TileScratch<E>& ts, double* sum) {
    E *pd = ts.part_d.data(), *pq = ts.part_q.data(), *ps = ts.part.data();
    const E* shift = ts.eshift.data();
    for (i64 r0 = 0; r0 < rows; r0 += kFlush) {
        const i64 r1 = std::min(rows, r0 + kFlush);
        if (r1 - r0 == kFlush) {  // a whole chunk per sweep, its partials in registers from 0
            const E* p = x + r0 * ld;
            double *tsd = ts.sd.data(), *tsq = ts.sq.data();
#pragma omp simd
            for (i64 w = 0; w < width; ++w) {
                const E sh = shift[w];
                E a = E(0), q2 = E(0), sx = E(0);
#pragma GCC unroll 4
                for (int q = 0; q < kFlush; q += 4) {
                    const E* pq = p + q * ld;
                    const E v0 = pq[w], v1 = pq[ld + w], v2 = pq[2 * ld + w], v3 = pq[3 * ld + w];
                    const E d0 = v0 - sh, d1 = v1 - sh, d2 = v2 - sh, d3 = v3 - sh;
                    a += (d0 + d1) + (d2 + d3);
                    q2 += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
                    sx += (v0 + v1) + (v2 + v3);
                }
                tsd[w] += static_cast<double>(a), tsq[w] += static_cast<double>(q2);
                sum[w] += static_cast<double>(sx);
            }
            continue;
        }
        i64 r = r0;
        for (; r + 4 <= r1; r += 4) {
            const E *p0 = x + r * ld, *p1 = p0 + ld, *p2 = p1 + ld, *p3 = p2 + ld;
#pragma omp simd
            for (i64 w = 0; w < width; ++w) {
                const E v0 = p0[w], v1 = p1[w], v2 = p2[w], v3 = p3[w], sh = shift[w];
                const E d0 = v0 - sh, d1 = v1 - sh, d2 = v2 - sh, d3 = v3 - sh;
                pd[w] += (d0 + d1) + (d2 + d3);
                pq[w] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
                ps[w] += (v0 + v1) + (v2 + v3);
            }
        }
        for (; r < r1; ++r) {
            const E* p = x + r * ld;
#pragma omp simd
            for (i64 w = 0; w < width; ++w) {
                const E v = p[w], d = v - shift[w];
                pd[w] += d, pq[w] += d * d, ps[w] += v;
            }
        }
#pragma omp simd
        for (i64 w = 0; w < width; ++w) {
            ts.sd[w] += static_cast<double>(pd[w]), ts.sq[w] += static_cast<double>(pq[w]);
            sum[w] += static_cast<double>(ps[w]);
            pd[w] = E(0), pq[w] = E(0), ps[w] = E(0);
        }
    }
}

// Σx of each group of group_rows rows (< kFlush: one partial per group, part), in tile_pass2's order of
// additions (quads of rows, then single rows, from the group's first), added into gs[g·width, (g + 1)·width).
template <class E>
LS_INLINE void tile_group_sums(const E* x, i64 rows, i64 ld, i64 width, i64 group_rows, double* gs, E* part) {
    std::fill_n(part, width, E(0));  // flush_channels zeroes it again after each group
    for (i64 g0 = 0; g0 + group_rows <= rows; g0 += group_rows) {
        const i64 end = g0 + group_rows;
        i64 r = g0;
        for (; r + 4 <= end; r += 4) {
            const E *p0 = x + r * ld, *p1 = p0 + ld, *p2 = p1 + ld, *p3 = p2 + ld;
#pragma omp simd
            for (i64 w = 0; w < width; ++w) part[w] += (p0[w] + p1[w]) + (p2[w] + p3[w]);
        }
        for (; r < end; ++r) {
            const E* p = x + r * ld;
#pragma omp simd
            for (i64 w = 0; w < width; ++w) part[w] += p[w];
        }
        flush_channels(part, gs + g0 / group_rows * width, width);  // gs zeroed by the caller
    }
}

// Σ of the finite values per channel over rows and their counts, in tile_pass2's order of additions.
template <class E>
void tile_sum(const E* x, i64 rows, i64 ld, i64 width, double* sum, i64* count) {
    std::fill_n(sum, width, 0.0);
    std::fill_n(count, width, 0);
    std::vector<E> part(width, E(0));
    auto fin = [](E v) { return std::isfinite(v) ? v : E(0); };
    for (i64 r0 = 0; r0 < rows; r0 += kFlush) {
        const i64 r1 = std::min(rows, r0 + kFlush);
        i64 r = r0;
        for (; r + 4 <= r1; r += 4) {
            const E *p0 = x + r * ld, *p1 = p0 + ld, *p2 = p1 + ld, *p3 = p2 + ld;
            for (i64 w = 0; w < width; ++w) {
                part[w] += (fin(p0[w]) + fin(p1[w])) + (fin(p2[w]) + fin(p3[w]));
                count[w] += std::isfinite(p0[w]) + std::isfinite(p1[w]) + std::isfinite(p2[w]) + std::isfinite(p3[w]);
            }
        }
        for (; r < r1; ++r) {
            const E* p = x + r * ld;
            for (i64 w = 0; w < width; ++w) part[w] += fin(p[w]), count[w] += std::isfinite(p[w]);
        }
        flush_channels(part.data(), sum, width);
    }
    for (i64 w = 0; w < width; ++w) {
        if (std::isfinite(sum[w])) continue;  // finite values whose float32 partial sums overflow
        sum[w] = 0;
        for (i64 r = 0; r < rows; ++r)
            if (std::isfinite(x[r * ld + w])) sum[w] += static_cast<double>(x[r * ld + w]);
    }
}

// tile_pass1 for num_thr thresholds (its first two), in AVX-512 intrinsics for float32 where the CPU has
// them (tile_pass1_avx512: the same results).
template <class E>
LS_INLINE void tile_pass1_any(const E* x, i64 rows, i64 ld, i64 width, const E* thr, int num_thr,
                              TileScratch<E>& ts, double* ss, i64 span) {
#ifdef LS_POW2_AVX512
    if constexpr (std::is_same_v<E, float>) {
        if (pow2::has_avx512()) {
            if (num_thr == 0) tile_pass1_avx512<0>(x, rows, ld, width, thr, ts, ss, span);
            else if (num_thr == 1) tile_pass1_avx512<1>(x, rows, ld, width, thr, ts, ss, span);
            else tile_pass1_avx512<2>(x, rows, ld, width, thr, ts, ss, span);
            return;
        }
    }
#endif
    if (num_thr == 0) tile_pass1<E, 0>(x, rows, ld, width, thr, ts, ss, span);
    else if (num_thr == 1) tile_pass1<E, 1>(x, rows, ld, width, thr, ts, ss, span);
    else tile_pass1<E, 2>(x, rows, ld, width, thr, ts, ss, span);
}

// A finite tile's statistics in ts (false, with ts partly written, when it holds a NaN or ±Inf or its
// squares overflow the compute type): one read with the moments around tile_shift's shift, kept when
// every channel's shift lies within kShiftRange·σ of its mean (one_pass_moments), else a second pass
// around the mean. Rows come in groups of group_rows (the samples of a block of whole samples, else
// one group): each group's Σx goes to ts.group_sum, in tile_pass2's order.
template <class E>
LS_INLINE bool tile_fast_impl(const E* x, i64 rows, i64 ld, i64 width, i64 group_rows, const E* thr,
                              int num_thr, TileScratch<E>& ts) {
    std::fill_n(ts.part.data(), width, E(0));
    std::fill_n(ts.part_d.data(), width, E(0));
    std::fill_n(ts.part_q.data(), width, E(0));
    std::fill_n(ts.sum.data(), width, 0.0);
    std::fill_n(ts.sd.data(), width, 0.0);
    std::fill_n(ts.sq.data(), width, 0.0);
    std::fill_n(ts.lo.data(), width, std::numeric_limits<E>::infinity());
    std::fill_n(ts.hi.data(), width, -std::numeric_limits<E>::infinity());
    std::fill_n(ts.zeros.data(), width, 0);
    std::fill(ts.above.begin(), ts.above.end(), 0);
    // pass 1's spans: the groups, or the whole tile when groups are shorter than half a chunk (chunks of
    // a few rows cost more than they read); then the groups' sums follow apart, into gs, and the tile's
    // Σx goes to a spare row. One thread, 128 × 256 float32 tiles: groups of 8–12 rows 0.17–0.18 ns per
    // value spanned (0.19–0.21 in two passes), 4 rows 0.35 spanned against 0.27 apart.
    const i64 groups = rows / group_rows;
    const bool short_groups = groups > 1 && group_rows < kFlush / 2;
    const std::size_t cells = static_cast<std::size_t>((groups + 1) * width);
    if (ts.group_sum.size() < cells) ts.group_sum.resize(cells);
    double* const gs = ts.group_sum.data();
    std::fill_n(gs, cells, 0.0);
    const i64 span = short_groups ? rows : group_rows;
    double* const ss = short_groups ? gs + groups * width : gs;
    tile_shift(x, rows, ld, width, ts.eshift.data());
    tile_pass1_any(x, rows, ld, width, thr, num_thr, ts, ss, span);
    if (!all_finite(ts.sum.data(), width)) return false;
    for (int t = 2; t < num_thr; ++t) tile_count_above(x, rows, ld, width, thr[t], ts.above.data() + t * width);
    const double n = static_cast<double>(rows);
    double far = 0;  // channels whose shift lies too far from their mean (or whose Σd, Σd² overflowed)
    const double *tsd = ts.sd.data(), *tsq = ts.sq.data();  // (pointers held apart: the stores below
    const E* eshift = ts.eshift.data();                     // could alias a vector's own, GCC assumes)
    double *trel = ts.rel.data(), *tm2 = ts.m2.data(), *tshift = ts.shift.data();
#pragma omp simd reduction(+ : far)
    for (i64 w = 0; w < width; ++w) {  // one_pass_moments, vectorised
        const double sd = tsd[w], m2 = tsq[w] - sd * sd / n, rel = sd / n, m2c = m2 > 0 ? m2 : 0.0;
        trel[w] = rel, tm2[w] = m2c;
        tshift[w] = static_cast<double>(eshift[w]);
        // far: the shift lies over kShiftRange·σ from the mean; NaN (a non-finite Σd) fails the
        // comparison, and m2 − m2 is NaN when Σd² overflowed
        const double excess = rel * rel * n - kShiftRange * kShiftRange * m2c + (m2 - m2);
        far += excess <= 0 ? 0.0 : 1.0;
    }
    if (far == 0) {
        if (short_groups) tile_group_sums(x, rows, ld, width, group_rows, gs, ts.part.data());
        return true;
    }
    const double inv = 1.0 / n;
#pragma omp simd
    for (i64 w = 0; w < width; ++w) {  // the shift, a value of type E near the mean (see runs_fast_rest)
        ts.eshift[w] = static_cast<E>(ts.sum[w] * inv);
        ts.shift[w] = static_cast<double>(ts.eshift[w]), ts.sd[w] = 0, ts.sq[w] = 0;
    }
    for (i64 g = 0; g < groups; ++g) {
        double* gsum = gs + g * width;
        std::fill_n(gsum, width, 0.0);
        tile_pass2(x + g * group_rows * ld, group_rows, ld, width, ts, gsum);
    }
    if (!all_finite(ts.sq.data(), width) || !all_finite(ts.sd.data(), width)) return false;  // squares past the float limit
#pragma omp simd
    for (i64 w = 0; w < width; ++w) {  // shifted_moments, vectorised
        const double sd = ts.sd[w], m2 = ts.sq[w] - sd * sd / n;
        ts.rel[w] = sd / n, ts.m2[w] = m2 > 0 ? m2 : 0.0;
    }
    return true;
}

LS_CLONES bool tile_fast(const float* x, i64 rows, i64 ld, i64 width, i64 group_rows, const float* thr,
                         int num_thr, TileScratch<float>& ts) {
    return tile_fast_impl(x, rows, ld, width, group_rows, thr, num_thr, ts);
}
LS_CLONES bool tile_fast(const double* x, i64 rows, i64 ld, i64 width, i64 group_rows, const double* thr,
                         int num_thr, TileScratch<double>& ts) {
    return tile_fast_impl(x, rows, ld, width, group_rows, thr, num_thr, ts);
}

// Chan merge of one tile's block statistics (nb values in every channel, all finite) into the
// accumulators of channels [0, width): the same update as chan_merge, vectorised over channels.
template <class E>
LS_INLINE void merge_tile_impl(const TileScratch<E>& ts, double nb, i64 width, int num_thr, double* cnt,
                               double* ref, double* rel, double* m2, double* lo, double* hi, i64* zeros,
                               i64* above, i64 above_stride) {
    const double* bref = ts.shift.data();
    const double* brel = ts.rel.data();
    const double* bq = ts.m2.data();
#pragma omp simd
    for (i64 w = 0; w < width; ++w) {
        const double n = cnt[w], total = n + nb, w_b = nb / total;
        ref[w] = n == 0 ? bref[w] : ref[w];  // the first block sets the reference
        const double delta = (bref[w] - ref[w]) + (brel[w] - rel[w]);
        rel[w] += delta * w_b;
        m2[w] += bq[w] + delta * delta * n * w_b;
        cnt[w] = total;
        const double l = static_cast<double>(ts.lo[w]), h = static_cast<double>(ts.hi[w]);
        lo[w] = l < lo[w] ? l : lo[w];
        hi[w] = h > hi[w] ? h : hi[w];
        zeros[w] += ts.zeros[w];
    }
    for (int t = 0; t < num_thr; ++t) {
        i64* a = above + t * above_stride;
        const cnt_t<E>* b = ts.above.data() + t * width;
#pragma omp simd
        for (i64 w = 0; w < width; ++w) a[w] += b[w];
    }
}

LS_CLONES void merge_tile(const TileScratch<float>& ts, double nb, i64 width, int num_thr, double* cnt,
                          double* ref, double* rel, double* m2, double* lo, double* hi, i64* zeros, i64* above,
                          i64 stride) {
    merge_tile_impl(ts, nb, width, num_thr, cnt, ref, rel, m2, lo, hi, zeros, above, stride);
}
LS_CLONES void merge_tile(const TileScratch<double>& ts, double nb, i64 width, int num_thr, double* cnt,
                          double* ref, double* rel, double* m2, double* lo, double* hi, i64* zeros, i64* above,
                          i64 stride) {
    merge_tile_impl(ts, nb, width, num_thr, cnt, ref, rel, m2, lo, hi, zeros, above, stride);
}

template <class E>
void tile_masked(const E* x, i64 rows, i64 ld, i64 width, const E* thr, int num_thr, TileScratch<E>& ts) {
    if (static_cast<i64>(ts.masked.size()) < width) ts.masked.resize(width);
    ts.masked_above.assign(static_cast<std::size_t>(width) * num_thr, 0);
    for (i64 w = 0; w < width; ++w) {
        ts.masked[w] = Partial{};
        run_masked(x + w, rows, ld, thr, num_thr, ts.masked[w], ts.masked_above.data() + w * num_thr);
    }
}

// ---- loading: contiguous compute-type values (a copy only when the type or the stride differ) -------

template <class In, class E>
const E* load_run(const In* src, i64 stride, i64 len, E* scratch) {
    if constexpr (std::is_same_v<In, E>) {
        if (stride == 1) return src;
    }
    for (i64 i = 0; i < len; ++i) scratch[i] = static_cast<E>(to_float(src[i * stride]));
    return scratch;
}

// rows × width values, row r at src + r·row_stride; returns the data and its leading dimension.
template <class In, class E>
const E* load_tile(const In* src, i64 rows, i64 row_stride, i64 width, i64 col_stride, E* scratch, i64& ld) {
    if constexpr (std::is_same_v<In, E>) {
        if (col_stride == 1) {
            ld = row_stride;
            return src;
        }
    }
    for (i64 r = 0; r < rows; ++r) load_run(src + r * row_stride, col_stride, width, scratch + r * width);
    ld = width;
    return scratch;
}

}  // namespace
}  // namespace ls
