// Coverage hit sets and the moments merge, in place (see state.hpp). The per-row helpers are inlined
// into coverage_update, whose AVX-512 / AVX2 / baseline clones (LS_CLONES) vectorise their loops.
#include "state.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

namespace ls {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr i64 kSmallK = 8;  // top-k by insertion up to here (O(C·k)), nth_element beyond
constexpr i64 kBlock = 16;  // values tested together against the top-k bar

// -- coverage ------------------------------------------------------------------------------------

// Row i of the neuron values as float64, NaN where not finite (torch: where(isfinite(v), v, nan)).
template <class T>
LS_INLINE void load_row(const NeuronValues& v, i64 i, double* __restrict row) {
    const T* __restrict p = static_cast<const T*>(v.data) + i * v.stride_n;
    const i64 c = v.c, stride = v.stride_c;
    if (stride == 1) {  // the usual case: a loop the compiler vectorises
        for (i64 j = 0; j < c; ++j) row[j] = std::isfinite(p[j]) ? static_cast<double>(p[j]) : kNaN;
        return;
    }
    for (i64 j = 0; j < c; ++j) row[j] = std::isfinite(p[j * stride]) ? static_cast<double>(p[j * stride]) : kNaN;
}

struct RowRange {
    double lo, hi;  // finite min / max of the row (+inf / −inf when it has none)
    i64 finite;
};

// The row's finite range; folds each neuron into low / high / skipped. Branch-free: a NaN fails
// every comparison, so it changes no extreme.
LS_INLINE RowRange observe_row(const double* __restrict row, i64 c, const CoverageState& s) {
    double lo = kInf, hi = -kInf;
    i64 nans = 0;
    double* __restrict low = s.low;
    double* __restrict high = s.high;
    i64* __restrict skipped = s.skipped;
#pragma omp simd reduction(min : lo) reduction(max : hi) reduction(+ : nans)
    for (i64 j = 0; j < c; ++j) {
        const double x = row[j];
        const i64 nan = x != x;
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        low[j] = x < low[j] ? x : low[j];
        high[j] = x > high[j] ? x : high[j];
        skipped[j] += nan;
        nans += nan;
    }
    return {lo, hi, c - nans};
}

// hits[j] |= x[j] > bound (NaN > bound is false).
LS_INLINE void mark_greater(const double* __restrict x, i64 c, double bound, u8* __restrict hits) {
    for (i64 j = 0; j < c; ++j) hits[j] |= static_cast<u8>(x[j] > bound);
}

// hits[j] |= x[j] >= bound (NaN ≥ bound is false).
LS_INLINE void mark_at_least(const double* __restrict x, i64 c, double bound, u8* __restrict hits) {
    for (i64 j = 0; j < c; ++j) hits[j] |= static_cast<u8>(x[j] >= bound);
}

// NC (Pei et al., "DeepXplore", SOSP 2017, §4.1): scale the row min–max over the layer's neurons,
// (φ − min) / (max − min); a neuron is covered at τ if its scaled value is > τ. A zero (or empty)
// span covers nothing: the reference's 0/0 is NaN, and NaN > τ is false.
LS_INLINE void nc_row(const double* __restrict row, i64 c, const RowRange& r, const double* taus, i64 num_taus,
                      u8* nc_hits, double* __restrict scaled) {
    const double span = r.hi - r.lo;
    if (!(span > 0)) return;
    for (i64 j = 0; j < c; ++j) scaled[j] = (row[j] - r.lo) / span;  // NaN neurons stay NaN
    for (i64 t = 0; t < num_taus; ++t) mark_greater(scaled, c, taus[t], nc_hits + t * c);
}

// Largest value of x[0, n) (NaN never wins; −inf if there is none).
LS_INLINE double block_max(const double* __restrict x, i64 n) {
    double m = -kInf;
#pragma omp simd reduction(max : m)
    for (i64 j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
    return m;
}

// Keeps the k largest values seen in best[0, filled) (descending) as x arrives; returns the new bar
// (the k-th largest so far, −inf until k values were seen): only values above it can enter.
LS_INLINE double insert_top(double x, double* best, i64& filled, i64 k) {
    i64 p = filled < k ? filled++ : k - 1;  // a new slot, or replace the smallest kept value
    for (; p > 0 && best[p - 1] < x; --p) best[p] = best[p - 1];
    best[p] = x;
    return filled == k ? best[k - 1] : -kInf;
}

// k-th largest finite value of the row, counting ties (torch: topk(k).values[:, -1] with NaN → −inf);
// −inf when the row has fewer than k finite values, so that every finite neuron is in its top k.
LS_INLINE double kth_largest(const double* row, i64 c, i64 k, i64 finite, std::vector<double>& scratch) {
    if (finite < k) return -kInf;
    if (k <= kSmallK) {  // one pass; blocks with no value above the bar are skipped with vector compares
        double best[kSmallK], bar = -kInf;  // while fewer than k are kept, every finite value enters
        i64 filled = 0;
        for (i64 j0 = 0; j0 < c; j0 += kBlock) {
            const i64 end = std::min(j0 + kBlock, c);
            if (!(block_max(row + j0, end - j0) > bar)) continue;
            for (i64 j = j0; j < end; ++j)
                if (row[j] > bar) bar = insert_top(row[j], best, filled, k);  // NaN > bar is false
        }
        return best[k - 1];
    }
    scratch.clear();
    for (i64 j = 0; j < c; ++j)
        if (row[j] == row[j]) scratch.push_back(row[j]);
    std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<double>());
    return scratch[static_cast<std::size_t>(k - 1)];
}

// KMNC / NBC / SNAC (DeepGauge §3.1) for ranges [low, high]: section floor((φ − low)·k / (high − low)),
// clamped to k − 1 so that φ == high is in the last one; corners φ < low and φ > high. A neuron whose
// range is not finite or has low > high records nothing; low == high has no sections.
LS_INLINE void range_row(const double* row, i64 c, const CoverageRanges& r) {
    const i64 k = r.sections;
    for (i64 j = 0; j < c; ++j) {
        const double x = row[j], lo = r.range_low[j], hi = r.range_high[j];
        if (x != x || !std::isfinite(lo) || !std::isfinite(hi) || !(lo <= hi)) continue;
        r.lower_hits[j] |= static_cast<u8>(x < lo);
        r.upper_hits[j] |= static_cast<u8>(x > hi);
        const double span = hi - lo;
        if (!(span > 0) || x < lo || x > hi) continue;
        const double q = std::floor(((x - lo) * static_cast<double>(k)) / span);  // ≥ 0 here
        // ∞/∞ when high − low overflows: torch casts that NaN to a negative index, i.e. no hit.
        if (q != q) continue;
        const i64 section = q < static_cast<double>(k - 1) ? static_cast<i64>(q) : k - 1;
        r.kmnc_hits[j * k + section] = 1;
    }
}

// -- moments -------------------------------------------------------------------------------------

// torch.minimum / torch.maximum: NaN if either operand is NaN.
inline double nan_min(double a, double b) { return (a != a || b != b) ? kNaN : (b < a ? b : a); }
inline double nan_max(double a, double b) { return (a != a || b != b) ? kNaN : (b > a ? b : a); }

}  // namespace

// Samples [begin, end) folded into state (and ranges' hit sets).
LS_CLONES void coverage_rows(const NeuronValues& values, i64 begin, i64 end, const double* taus, i64 num_taus,
                             i64 top_k, const CoverageState& state, const CoverageRanges* ranges) {
    const i64 c = values.c, k = std::min(top_k, c);
    std::vector<double> row(static_cast<std::size_t>(c)), scaled(static_cast<std::size_t>(c)), scratch;
    for (i64 i = begin; i < end; ++i) {
        if (values.dtype == DType::f64)
            load_row<double>(values, i, row.data());
        else
            load_row<float>(values, i, row.data());
        const RowRange r = observe_row(row.data(), c, state);
        if (r.finite == 0) continue;  // every neuron skipped: no NC, TKNC or range hit
        nc_row(row.data(), c, r, taus, num_taus, state.nc_hits, scaled.data());
        // TKNC (Ma et al., "DeepGauge", ASE 2018, §3.2): covered if ≥ the k-th largest value (ties kept)
        const double kth = kth_largest(row.data(), c, k, r.finite, scratch);
        mark_at_least(row.data(), c, kth, state.topk_hits);
        if (ranges) range_row(row.data(), c, *ranges);
    }
}

// A thread's own hit sets and extremes, starting empty, for the samples it folds.
struct CoverageCopy {
    std::vector<u8> nc, topk, kmnc, lower, upper;
    std::vector<double> low, high;
    std::vector<i64> skipped;
    CoverageState state{};
    CoverageRanges ranges{};

    CoverageCopy(i64 c, i64 num_taus, const CoverageRanges* r)
        : nc(static_cast<std::size_t>(num_taus * c), 0), topk(static_cast<std::size_t>(c), 0),
          kmnc(r ? static_cast<std::size_t>(c * r->sections) : 0, 0), lower(r ? c : 0, 0), upper(r ? c : 0, 0),
          low(static_cast<std::size_t>(c), kInf), high(static_cast<std::size_t>(c), -kInf),
          skipped(static_cast<std::size_t>(c), 0) {
        state = {nc.data(), topk.data(), low.data(), high.data(), skipped.data()};
        if (r) ranges = {r->range_low, r->range_high, r->sections, kmnc.data(), lower.data(), upper.data()};
    }

    // Hit sets by OR, extremes by min / max, skipped by sum: the same state whichever thread folded a sample.
    void fold_into(const CoverageState& s, const CoverageRanges* r, i64 c, i64 num_taus) const {
        for (i64 j = 0; j < num_taus * c; ++j) s.nc_hits[j] |= nc[j];
        for (i64 j = 0; j < c; ++j) {
            s.topk_hits[j] |= topk[j];
            s.low[j] = std::min(s.low[j], low[j]);
            s.high[j] = std::max(s.high[j], high[j]);
            s.skipped[j] += skipped[j];
        }
        if (!r) return;
        for (i64 j = 0; j < c * r->sections; ++j) r->kmnc_hits[j] |= kmnc[j];
        for (i64 j = 0; j < c; ++j) r->lower_hits[j] |= lower[j], r->upper_hits[j] |= upper[j];
    }
};

constexpr i64 kCoverageParallel = 16384;  // neuron values per batch from which a second thread pays

void coverage_update(const NeuronValues& values, const double* taus, i64 num_taus, i64 top_k,
                     const CoverageState& state, const CoverageRanges* ranges, int num_threads) {
    const i64 n = values.n, c = values.c;
    const int threads = n > 1 && n * c >= kCoverageParallel
                            ? static_cast<int>(std::min<i64>(clamp_threads(num_threads), n)) : 1;
    if (threads == 1) return coverage_rows(values, 0, n, taus, num_taus, top_k, state, ranges);
    // the first part of the batch into the state itself, the others into copies folded in after
    std::vector<CoverageCopy> copies;
    copies.reserve(static_cast<std::size_t>(threads - 1));
    for (int t = 1; t < threads; ++t) copies.emplace_back(c, num_taus, ranges);
    FirstError error;
#pragma omp parallel num_threads(threads)
    {
        const int tid = thread_id();
        i64 begin, end;
        split_range(n, team_size(), tid, begin, end);
        error.run([&] {
            if (tid == 0) {
                coverage_rows(values, begin, end, taus, num_taus, top_k, state, ranges);
            } else {
                const CoverageCopy& own = copies[static_cast<std::size_t>(tid - 1)];
                coverage_rows(values, begin, end, taus, num_taus, top_k, own.state, ranges ? &own.ranges : nullptr);
            }
        });
    }
    error.rethrow();
    for (const CoverageCopy& own : copies) own.fold_into(state, ranges, c, num_taus);
}

// Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for computing sample variances"
// (1979): n = n_a + n_b, δ = mean_b − mean_a, mean = mean_a + δ·n_b/n, M2 = M2_a + M2_b + δ²·n_a·n_b/n,
// in the operation order of stats.moments.chan_combine (n clamped to ≥ 1 for empty parts).
void moments_merge(const MomentState& s, const MomentPart& p, i64 c, i64 num_thresholds) {
    for (i64 j = 0; j < c; ++j) {
        const i64 n_a = s.count[j], n_b = p.count[j], n = n_a + n_b;
        const double n_f = std::max(static_cast<double>(n), 1.0);
        const double delta = p.mean[j] - s.mean[j];
        const double w_b = static_cast<double>(n_b) / n_f;
        s.mean[j] = s.mean[j] + delta * w_b;
        s.m2[j] = (s.m2[j] + p.m2[j]) + ((delta * delta) * static_cast<double>(n_a)) * w_b;
        s.count[j] = n;
        s.min[j] = nan_min(s.min[j], p.min[j]);
        s.max[j] = nan_max(s.max[j], p.max[j]);
        s.zeros[j] += p.zeros[j];
        s.nan[j] += p.nan[j];
        s.inf[j] += p.inf[j];
    }
    for (i64 j = 0; j < num_thresholds * c; ++j) s.above[j] += p.above[j];
}

}  // namespace ls
