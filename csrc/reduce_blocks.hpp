// The hot loops of the fused channel reduction (included by reduce.cpp only).
//
// Two shapes of block: `rows` contiguous runs of one channel (channels first), and tiles of channels-last
// rows. Each is reduced in two passes while in cache: pass 1 gives min, max, zero count and a mean
// estimate m̃ (and the threshold counts follow); pass 2 gives Σd and Σd² of d = x − m̃ in float64.
// A block whose pass-1 sum is not finite holds a NaN or an Inf (or values near the float limit) and is
// redone with masks. The hot functions carry AVX-512/AVX2/baseline clones (LS_CLONES).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "common.hpp"

namespace ls {
namespace {

constexpr i64 kBlock = 4096;       // elements per run block (16 KiB of float32): pass 2 re-reads it from L1
constexpr i64 kTileBlock = 16384;  // elements per channels-last block (64 KiB of float32, in L2)
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

template <class E>
struct Pass1 {
    double sum;
    E lo, hi;
    i64 zeros;
};

// Tail = false: len is a multiple of kLanes (no tail loop, so the lane accumulators stay in registers
// across runs). Tail = true: the general case. Both add in the same order.
template <class E, bool Tail>
LS_INLINE Pass1<E> runs_pass1(const E* x, i64 rows, i64 stride, i64 len) {
    E s[kLanes], lo[kLanes], hi[kLanes];
    cnt_t<E> z[kLanes];
    for (int j = 0; j < kLanes; ++j)
        s[j] = 0, lo[j] = std::numeric_limits<E>::infinity(), hi[j] = -lo[j], z[j] = 0;
    for (i64 r = 0; r < rows; ++r) {
        const E* row = x + r * stride;
        i64 i = 0;
        for (; i + kLanes <= len; i += kLanes) {
            const E* xi = row + i;
#pragma omp simd
            for (int j = 0; j < kLanes; ++j) {
                const E v = xi[j];
                s[j] += v;
                lo[j] = v < lo[j] ? v : lo[j];
                hi[j] = v > hi[j] ? v : hi[j];
                z[j] += (v == E(0));
            }
        }
        if constexpr (Tail) {
            for (int j = 0; i < len; ++i, ++j) {
                const E v = row[i];
                s[j] += v, lo[j] = v < lo[j] ? v : lo[j], hi[j] = v > hi[j] ? v : hi[j], z[j] += (v == E(0));
            }
        }
    }
    Pass1<E> p{0.0, lo[0], hi[0], 0};
    for (int j = 0; j < kLanes; ++j) {
        p.sum += s[j], p.zeros += z[j];
        p.lo = lo[j] < p.lo ? lo[j] : p.lo;
        p.hi = hi[j] > p.hi ? hi[j] : p.hi;
    }
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

// Σd² over all runs and, per run, Σd (d = x − shift) and Σx. The run sums Σx use run_sum's order of
// additions, so that a run's sum depends on the run alone (not on the shift of the block it is in).
// The lanes of kRowBatch runs are summed together (vectorised over runs, each run's lanes still added
// in lane order from 0.0): one run's lane sum is a chain of kLanes dependent additions.
constexpr int kRowBatch = 8;

template <class E, bool Tail>
LS_INLINE double runs_pass2(const E* x, i64 rows, i64 stride, i64 len, double shift, double* row_sd,
                            double* row_sum) {
    double q[kLanes] = {};
    alignas(64) double ta[kLanes][kRowBatch], tb[kLanes][kRowBatch];
    for (i64 r0 = 0; r0 < rows; r0 += kRowBatch) {
        const int nr = static_cast<int>(std::min<i64>(kRowBatch, rows - r0));
        if (nr < kRowBatch)
            for (int j = 0; j < kLanes; ++j)
                for (int k = nr; k < kRowBatch; ++k) ta[j][k] = 0, tb[j][k] = 0;
        for (int k = 0; k < nr; ++k) {
            const E* row = x + (r0 + k) * stride;
            double a[kLanes] = {}, b[kLanes] = {};
            i64 i = 0;
            for (; i + kLanes <= len; i += kLanes) {
                const E* xi = row + i;
#pragma omp simd
                for (int j = 0; j < kLanes; ++j) {
                    const double v = static_cast<double>(xi[j]), d = v - shift;
                    a[j] += d;
                    b[j] += v;
                    q[j] += d * d;
                }
            }
            if constexpr (Tail) {
                for (int j = 0; i < len; ++i, ++j) {
                    const double v = static_cast<double>(row[i]), d = v - shift;
                    a[j] += d, b[j] += v, q[j] += d * d;
                }
            }
            for (int j = 0; j < kLanes; ++j) ta[j][k] = a[j], tb[j][k] = b[j];
        }
        double sd[kRowBatch] = {}, sum[kRowBatch] = {};
        for (int j = 0; j < kLanes; ++j) {
#pragma omp simd
            for (int k = 0; k < kRowBatch; ++k) sd[k] += ta[j][k], sum[k] += tb[j][k];
        }
        for (int k = 0; k < nr; ++k) row_sd[r0 + k] = sd[k], row_sum[r0 + k] = sum[k];
    }
    double sq = 0;
    for (int j = 0; j < kLanes; ++j) sq += q[j];
    return sq;
}

// Σ of the finite values of one run and their count, in runs_pass2's order of additions (kLanes
// lanes, lane j holding positions ≡ j mod kLanes): equal to its Σx when the run is finite.
template <class E>
void run_sum(const E* row, i64 len, double& sum, i64& count) {
    double b[kLanes] = {};
    i64 n = 0, i = 0;
    for (; i + kLanes <= len; i += kLanes)
        for (int j = 0; j < kLanes; ++j) {
            const E v = row[i + j];
            const bool fin = std::isfinite(v);
            b[j] += fin ? static_cast<double>(v) : 0.0, n += fin;
        }
    for (int j = 0; i < len; ++i, ++j) {
        const E v = row[i];
        const bool fin = std::isfinite(v);
        b[j] += fin ? static_cast<double>(v) : 0.0, n += fin;
    }
    sum = 0;
    for (int j = 0; j < kLanes; ++j) sum += b[j];
    count = n;
}

// Fast path over the runs; false when they hold a non-finite value (nothing written then).
// row_sums[r] receives the sum of run r.
template <class E>
LS_INLINE bool runs_fast_impl(const E* x, i64 rows, i64 stride, i64 len, const E* thr, int num_thr, Partial& p,
                              i64* above, double* row_sums, double* row_sd) {
    const bool tail = len % kLanes != 0;
    const Pass1<E> r = tail ? runs_pass1<E, true>(x, rows, stride, len) : runs_pass1<E, false>(x, rows, stride, len);
    if (!std::isfinite(r.sum)) return false;
    int t = 0;
    for (; t + 2 <= num_thr; t += 2)
        runs_count_above<E, true>(x, rows, stride, len, thr[t], thr[t + 1], above[t], above[t + 1]);
    if (t < num_thr) runs_count_above<E, false>(x, rows, stride, len, thr[t], thr[t], above[t], above[t]);
    const i64 n = rows * len;
    const double shift = r.sum / static_cast<double>(n);
    const double sq = tail ? runs_pass2<E, true>(x, rows, stride, len, shift, row_sd, row_sums)
                           : runs_pass2<E, false>(x, rows, stride, len, shift, row_sd, row_sums);
    double sd = 0;
    for (i64 k = 0; k < rows; ++k) sd += row_sd[k];
    p.n = n, p.zeros = r.zeros, p.min = r.lo, p.max = r.hi;
    p.ref = shift;
    shifted_moments(sd, sq, n, p.rel, p.m2);
    return true;
}

LS_CLONES bool runs_fast(const float* x, i64 rows, i64 stride, i64 len, const float* thr, int num_thr, Partial& p,
                         i64* above, double* row_sums, double* row_sd) {
    return runs_fast_impl(x, rows, stride, len, thr, num_thr, p, above, row_sums, row_sd);
}
LS_CLONES bool runs_fast(const double* x, i64 rows, i64 stride, i64 len, const double* thr, int num_thr,
                         Partial& p, i64* above, double* row_sums, double* row_sd) {
    return runs_fast_impl(x, rows, stride, len, thr, num_thr, p, above, row_sums, row_sd);
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
    std::vector<E> fsum, lo, hi;
    std::vector<cnt_t<E>> zeros, above;  // above: [T, width]
    std::vector<double> shift, sd, sq, rel, m2;  // block mean = shift + rel
    std::vector<double> group_sd;   // [groups, width]: Σd of each group of rows (one sample each)
    std::vector<double> group_sum;  // [groups, width]: Σx of each group of rows (tile_sum's order)
    std::vector<Partial> masked;    // per channel, for tiles with NaN/Inf
    std::vector<i64> masked_above;  // [width, T]
    TileScratch(i64 width, int num_thr)
        : fsum(width), lo(width), hi(width), zeros(width), above(static_cast<std::size_t>(width) * num_thr),
          shift(width), sd(width), sq(width), rel(width), m2(width), masked(width),
          masked_above(static_cast<std::size_t>(width) * num_thr) {}
};

// Four rows per sweep: the per-channel accumulators are loaded and stored once per four values.
template <class E>
LS_INLINE void tile_pass1(const E* x, i64 rows, i64 ld, i64 width, E* s, E* lo, E* hi, cnt_t<E>* z) {
    i64 r = 0;
    for (; r + 4 <= rows; r += 4) {
        const E *p0 = x + r * ld, *p1 = p0 + ld, *p2 = p1 + ld, *p3 = p2 + ld;
#pragma omp simd
        for (i64 w = 0; w < width; ++w) {
            const E v0 = p0[w], v1 = p1[w], v2 = p2[w], v3 = p3[w];
            s[w] += (v0 + v1) + (v2 + v3);
            const E m01 = v0 < v1 ? v0 : v1, m23 = v2 < v3 ? v2 : v3, m = m01 < m23 ? m01 : m23;
            const E n01 = v0 > v1 ? v0 : v1, n23 = v2 > v3 ? v2 : v3, n = n01 > n23 ? n01 : n23;
            lo[w] = m < lo[w] ? m : lo[w];
            hi[w] = n > hi[w] ? n : hi[w];
            z[w] += (v0 == E(0)) + (v1 == E(0)) + (v2 == E(0)) + (v3 == E(0));
        }
    }
    for (; r < rows; ++r) {
        const E* p = x + r * ld;
#pragma omp simd
        for (i64 w = 0; w < width; ++w) {
            const E v = p[w];
            s[w] += v, lo[w] = v < lo[w] ? v : lo[w], hi[w] = v > hi[w] ? v : hi[w], z[w] += (v == E(0));
        }
    }
}

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

// Σd, Σd² (d = x − shift) and Σx per channel; Σx in tile_sum's order of additions (pairs of rows).
template <class E>
LS_INLINE void tile_pass2(const E* x, i64 rows, i64 ld, i64 width, const double* shift, double* sd, double* sq,
                          double* sum) {
    i64 r = 0;
    for (; r + 2 <= rows; r += 2) {
        const E *p0 = x + r * ld, *p1 = p0 + ld;
#pragma omp simd
        for (i64 w = 0; w < width; ++w) {
            const double v0 = static_cast<double>(p0[w]), v1 = static_cast<double>(p1[w]);
            const double d0 = v0 - shift[w], d1 = v1 - shift[w];
            sd[w] += d0 + d1;
            sq[w] += d0 * d0 + d1 * d1;
            sum[w] += v0 + v1;
        }
    }
    for (; r < rows; ++r) {
        const E* p = x + r * ld;
#pragma omp simd
        for (i64 w = 0; w < width; ++w) {
            const double v = static_cast<double>(p[w]), d = v - shift[w];
            sd[w] += d, sq[w] += d * d, sum[w] += v;
        }
    }
}

// Σ of the finite values per channel over rows and their counts, in tile_pass2's order of additions.
template <class E>
void tile_sum(const E* x, i64 rows, i64 ld, i64 width, double* sum, i64* count) {
    std::fill_n(sum, width, 0.0);
    std::fill_n(count, width, 0);
    i64 r = 0;
    for (; r + 2 <= rows; r += 2) {
        const E *p0 = x + r * ld, *p1 = p0 + ld;
        for (i64 w = 0; w < width; ++w) {
            const bool f0 = std::isfinite(p0[w]), f1 = std::isfinite(p1[w]);
            sum[w] += (f0 ? static_cast<double>(p0[w]) : 0.0) + (f1 ? static_cast<double>(p1[w]) : 0.0);
            count[w] += f0 + f1;
        }
    }
    for (; r < rows; ++r) {
        const E* p = x + r * ld;
        for (i64 w = 0; w < width; ++w) {
            const bool f = std::isfinite(p[w]);
            sum[w] += f ? static_cast<double>(p[w]) : 0.0, count[w] += f;
        }
    }
}

template <class E>
LS_INLINE bool tile_fast_impl(const E* x, i64 rows, i64 ld, i64 width, i64 group_rows, const E* thr,
                              int num_thr, TileScratch<E>& ts) {
    E* s = ts.fsum.data();
    std::fill_n(s, width, E(0));
    std::fill_n(ts.lo.data(), width, std::numeric_limits<E>::infinity());
    std::fill_n(ts.hi.data(), width, -std::numeric_limits<E>::infinity());
    std::fill_n(ts.zeros.data(), width, 0);
    tile_pass1(x, rows, ld, width, s, ts.lo.data(), ts.hi.data(), ts.zeros.data());
    for (i64 w = 0; w < width; ++w)
        if (!std::isfinite(s[w])) return false;
    std::fill(ts.above.begin(), ts.above.end(), 0);
    for (int t = 0; t < num_thr; ++t) tile_count_above(x, rows, ld, width, thr[t], ts.above.data() + t * width);
    const double inv = 1.0 / static_cast<double>(rows);
    for (i64 w = 0; w < width; ++w) ts.shift[w] = static_cast<double>(s[w]) * inv, ts.sd[w] = 0, ts.sq[w] = 0;
    const i64 groups = rows / group_rows;  // rows of one sample each: their Σd give the sample sums
    if (static_cast<i64>(ts.group_sd.size()) < groups * width) {
        ts.group_sd.resize(groups * width);
        ts.group_sum.resize(groups * width);
    }
    for (i64 g = 0; g < groups; ++g) {
        double* gsd = ts.group_sd.data() + g * width;
        double* gsum = ts.group_sum.data() + g * width;
        std::fill_n(gsd, width, 0.0);
        std::fill_n(gsum, width, 0.0);
        tile_pass2(x + g * group_rows * ld, group_rows, ld, width, ts.shift.data(), gsd, ts.sq.data(), gsum);
#pragma omp simd
        for (i64 w = 0; w < width; ++w) ts.sd[w] += gsd[w];
    }
    for (i64 w = 0; w < width; ++w) shifted_moments(ts.sd[w], ts.sq[w], rows, ts.rel[w], ts.m2[w]);
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
    std::fill(ts.masked_above.begin(), ts.masked_above.end(), 0);
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
