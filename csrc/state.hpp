// In-place updates of small accumulator state: neuron-coverage hit sets and the moments merge.
//
// O(N·C) work on [N, C] / [C] arrays, single-threaded: these run once per layer and batch on a few
// hundred channels, where a thread team would cost more than the work. The semantics are those of the
// torch code in stats/coverage.py and stats/moments.py, operation for operation in float64, so that
// both paths give the same bits (compiled with -ffp-contract=off: no fused multiply-adds).
#pragma once

#include <cstdint>

#include "common.hpp"

namespace ls {

using u8 = std::uint8_t;  // NumPy / torch bool: one byte, 0 or 1

// Coverage state of one layer (C neurons, T thresholds), C-contiguous.
struct CoverageState {
    u8* nc_hits;      // [T, C]
    u8* topk_hits;    // [C]
    double* low;      // [C] smallest finite neuron value seen (+inf before)
    double* high;     // [C] largest finite neuron value seen (−inf before)
    i64* skipped;     // [C] non-finite neuron values
};

// KMNC / NBC / SNAC state, given per-neuron reference ranges [range_low, range_high].
struct CoverageRanges {
    const double* range_low;   // [C]
    const double* range_high;  // [C]
    i64 sections;              // k
    u8* kmnc_hits;             // [C, k]
    u8* lower_hits;            // [C]
    u8* upper_hits;            // [C]
};

// Neuron values of one batch: [N, C] float32 or float64 with element strides.
struct NeuronValues {
    const void* data;
    DType dtype;  // f32 or f64
    i64 n, c, stride_n, stride_c;
};

// Folds one batch into the coverage state. `ranges` may be null (no reference ranges). Samples are split
// over up to num_threads threads for a large batch; the state is the same for any thread count.
void coverage_update(const NeuronValues& values, const double* taus, i64 num_taus, i64 top_k,
                     const CoverageState& state, const CoverageRanges* ranges, int num_threads = 1);

// Per-channel moments, extremes and counts (ChannelStats fields without sample_mean), C-contiguous.
template <class I, class F>
struct MomentFields {
    I* count;  // [C]
    F* mean;   // [C]
    F* m2;     // [C]
    F* min;    // [C]
    F* max;    // [C]
    I* zeros;  // [C]
    I* above;  // [T, C]
    I* nan;    // [C]
    I* inf;    // [C]
};
using MomentState = MomentFields<i64, double>;
using MomentPart = MomentFields<const i64, const double>;

// state ← state ∪ part (Chan, Golub & LeVeque 1979 for count/mean/M2; min/max; sums of counts).
void moments_merge(const MomentState& state, const MomentPart& part, i64 c, i64 num_thresholds);

}  // namespace ls
