// One call per layer and batch for the probe's default statistics: the fused channel reduction of the
// activation and, straight after it, the in-place updates of the layer's moments, coverage and
// histogram state (src/layerscope/stats/_direct.py builds the plan and calls it through ctypes).
//
// Through Python each batch of a layer makes the reduction's output arrays, a ChannelStats around them
// and three accumulator updates, each a Python method and a native call with its argument checks. Inside
// a forward pass all of that runs with cold caches right after the layer's own kernel: measured on a
// ResNet-18 (batch 64, 2 threads), about 8 ms of a 200 ms batch went there. Here the same kernels run
// back to back on the same arguments (channel_reduce, moments_merge, coverage_update and the addition of
// the fused histogram's counts), so the state is the same, bit for bit, as through the Python path.
//
// The histogram is added only when every finite value of the batch lies within the range the
// accumulator has seen (its grid then stays, see stats/histogram.py); otherwise the batch's finite range
// and the counts on the planned grid are left for the caller, which grows the grid in Python.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>

#include "buffers.hpp"
#include "common.hpp"
#include "histogram.hpp"
#include "reduce.hpp"
#include "state.hpp"

using ls::i64;

namespace {

// The plan: int64 words (pointers and doubles stored by their bits), laid out as the PLAN_* offsets of
// src/layerscope/stats/_direct.py.
enum Word : int {
    kDtype = 0,        // 0 float32, 1 float64, 2 float16, 3 bfloat16
    kN, kC, kS, kSN, kSC, kSS,  // the activation as [N, C, S] with element strides
    kNumThr, kThr,     // thresholds: count, float64 [T]
    kParts,            // bit 0 moments, 1 coverage, 2 histogram
    kMoments,          // 9 pointers: count, mean, m2, min, max, zeros, above [T, C], nan, inf
    kTaus = kMoments + 9, kNumTaus, kTopK,
    kCoverage,         // 5 pointers: nc_hits [T', C], topk_hits, low, high, skipped
    kRanges = kCoverage + 5,  // 0, or 1 and then: range_low, range_high, sections, kmnc_hits, lower_hits, upper_hits
    kRangeLow, kRangeHigh, kSections, kKmnc, kLower, kUpper,
    kE, kJ0, kBins, kCounts,  // the grid and the state's counts [bins]
    kLo, kHi,          // the range the histogram has seen (float64 bits)
    kOut,              // float64 [2] (the batch's finite min and max), then int64 [bins + 2] counts
    kWords
};

template <class P>
P* at(const i64* plan, int i) {
    return reinterpret_cast<P*>(static_cast<std::intptr_t>(plan[i]));
}

double real(const i64* plan, int i) {
    double d;
    std::memcpy(&d, &plan[i], sizeof d);
    return d;
}

constexpr ls::DType kDtypes[] = {ls::DType::f32, ls::DType::f64, ls::DType::f16, ls::DType::bf16};

}  // namespace

extern "C" {

// Returns 0 (every planned update done), 1 (moments and coverage done; the histogram left to the caller
// with the batch's finite range and counts in the plan's output), -1 (the reduction failed, e.g. out of
// memory: nothing done, the caller takes its Python path, which reports the error) or -2 (the coverage
// update failed, out of memory for its per-thread copies: the state may be partly updated, and the
// caller raises). The moments merge and the histogram's addition cannot fail; they run last.
LS_EXPORT int ls_direct_update(const void* x, int threads, const i64* plan) {
    const i64 n = plan[kN], c = plan[kC], num_thr = plan[kNumThr], parts = plan[kParts];
    const bool hist = parts & 4;
    const ls::Strided3 view{x, kDtypes[plan[kDtype]], n, c, plan[kS], plan[kSN], plan[kSC], plan[kSS]};
    const std::size_t bytes = std::max<std::size_t>(ls::reduce_out_bytes(n, c, num_thr), 8);
    void* p = nullptr;
    const ls::Pow2Counter grid{static_cast<int>(plan[kE]), plan[kJ0], plan[kBins]};
    auto* bounds = hist ? at<double>(plan, kOut) : nullptr;
    i64* counts = hist ? reinterpret_cast<i64*>(bounds + 2) : nullptr;
    bool reduced = false;  // past the reduction: a failure may have left the coverage half updated
    try {
        p = ls::acquire_buffer(bytes);
        const ls::ReduceOut out = ls::reduce_out_at(p, c, num_thr);
        if (hist) std::fill_n(counts, grid.bins + 2, i64(0));
        ls::channel_reduce(view, at<const double>(plan, kThr), static_cast<int>(num_thr), out, threads,
                           hist ? &grid : nullptr, counts);
        reduced = true;
        if ((parts & 2) && n > 0) {
            const i64* s = plan + kCoverage;
            const ls::CoverageState state{at<ls::u8>(s, 0), at<ls::u8>(s, 1), at<double>(s, 2), at<double>(s, 3),
                                          at<i64>(s, 4)};
            const ls::CoverageRanges ranges{at<const double>(plan, kRangeLow), at<const double>(plan, kRangeHigh),
                                            plan[kSections], at<ls::u8>(plan, kKmnc), at<ls::u8>(plan, kLower),
                                            at<ls::u8>(plan, kUpper)};
            const ls::NeuronValues values{out.sample_mean, ls::DType::f64, n, c, c, 1};
            ls::coverage_update(values, at<const double>(plan, kTaus), plan[kNumTaus], plan[kTopK], state,
                                plan[kRanges] ? &ranges : nullptr, threads);
        }
        if (parts & 1) {
            const i64* m = plan + kMoments;
            const ls::MomentState state{at<i64>(m, 0), at<double>(m, 1), at<double>(m, 2), at<double>(m, 3),
                                        at<double>(m, 4), at<i64>(m, 5), at<i64>(m, 6), at<i64>(m, 7),
                                        at<i64>(m, 8)};
            const ls::MomentPart part{out.count, out.mean, out.m2, out.min, out.max, out.zeros, out.above, out.nan,
                                      out.inf};
            ls::moments_merge(state, part, c, num_thr);
        }
        int status = 0;
        if (hist) {
            // the batch's finite range, as AdaptiveHistogram._batch_range takes it from the extremes
            double lo = std::numeric_limits<double>::infinity(), hi = -lo;
            for (i64 ch = 0; ch < c; ++ch) lo = std::min(lo, out.min[ch]), hi = std::max(hi, out.max[ch]);
            bounds[0] = lo, bounds[1] = hi;
            if (lo <= hi) {  // else no finite value: nothing to count
                if (real(plan, kLo) <= lo && hi <= real(plan, kHi)) {
                    i64* state = at<i64>(plan, kCounts);
                    for (i64 j = 0; j < grid.bins; ++j) state[j] += counts[j];
                } else {
                    status = 1;
                }
            }
        }
        ls::release_buffer(p, bytes);
        return status;
    } catch (const std::exception&) {
        if (p) ls::release_buffer(p, bytes);
        return reduced ? -2 : -1;
    }
}

// The plan's length in words, for the Python side to check against its own layout.
LS_EXPORT i64 ls_direct_plan_words() { return kWords; }

}  // extern "C"
