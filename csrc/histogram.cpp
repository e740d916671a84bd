// Histogram with per-thread private counts, summed at the end.
//
// The bin of x is first estimated as floor((x − lo) · bins / (hi − lo)) and then corrected against the
// float64 edges, as numpy.histogram does for equal bins: the edges, not the rounding of the estimate,
// define the bins, so every backend puts a value on an edge in the same bin.
#include "histogram.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace ls {
namespace {

std::vector<double> make_edges(i64 bins, double lo, double hi) {
    std::vector<double> edges(bins + 1);
    const double step = (hi - lo) / static_cast<double>(bins);
    for (i64 j = 0; j < bins; ++j) edges[j] = lo + static_cast<double>(j) * step;
    edges[bins] = hi;
    return edges;
}

constexpr int kWays = 4;  // interleaved sub-histograms: a run of equal bins does not serialise on one counter

// Bin of v for lo <= v <= hi: the estimate, then steps against the edges (the estimate is within one
// bin unless the bins are narrower than float64's spacing at lo/hi, where edges collapse). The loops
// are rarely entered, so well predicted: faster than a branch-free correction here.
LS_INLINE i64 bin_of(double v, double lo, double scale, const double* edges, i64 bins) {
    i64 j = static_cast<i64>((v - lo) * scale);
    j = j < 0 ? 0 : (j > bins - 1 ? bins - 1 : j);
    while (j > 0 && v < edges[j]) --j;
    while (j < bins - 1 && v >= edges[j + 1]) ++j;
    return j;
}

// counts: kWays × bins; values outside [lo, hi] (NaN and ±Inf included) are skipped.
template <class In>
LS_INLINE void count_range_impl(const In* x, i64 begin, i64 end, double lo, double hi, double scale,
                                const double* edges, i64 bins, i64* counts) {
    i64 i = begin;
    for (; i + kWays <= end; i += kWays) {
        for (int k = 0; k < kWays; ++k) {
            const double v = static_cast<double>(to_float(x[i + k]));
            if (v >= lo && v <= hi) ++counts[k * bins + bin_of(v, lo, scale, edges, bins)];  // NaN: false
        }
    }
    for (; i < end; ++i) {
        const double v = static_cast<double>(to_float(x[i]));
        if (v >= lo && v <= hi) ++counts[bin_of(v, lo, scale, edges, bins)];
    }
}

#define LS_COUNT_RANGE(T)                                                                                \
    LS_CLONES void count_range(const T* x, i64 begin, i64 end, double lo, double hi, double scale,        \
                               const double* edges, i64 bins, i64* counts) {                             \
        count_range_impl(x, begin, end, lo, hi, scale, edges, bins, counts);                             \
    }
LS_COUNT_RANGE(float)
LS_COUNT_RANGE(double)
LS_COUNT_RANGE(f16)
LS_COUNT_RANGE(bf16)
#undef LS_COUNT_RANGE

}  // namespace

void histogram(const void* x, DType dtype, i64 n, i64 bins, double lo, double hi, i64* counts,
               int num_threads) {
    const std::vector<double> edges = make_edges(bins, lo, hi);
    const double scale = static_cast<double>(bins) / (hi - lo);
    const int threads = clamp_threads(num_threads);
    std::vector<std::vector<i64>> parts(threads, std::vector<i64>(static_cast<std::size_t>(kWays) * bins, 0));
    dispatch(dtype, [&](auto tag) {
        using In = decltype(tag);
        const In* data = static_cast<const In*>(x);
#pragma omp parallel num_threads(threads)
        {
            const int tid = thread_id();
            i64 begin, end;
            split_range(n, team_size(), tid, begin, end);
            count_range(data, begin, end, lo, hi, scale, edges.data(), bins, parts[tid].data());
        }
    });
    for (const auto& part : parts)
        for (i64 j = 0; j < static_cast<i64>(part.size()); ++j) counts[j % bins] += part[j];
}

}  // namespace ls
