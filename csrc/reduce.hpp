// Fused per-channel reduction: one read of an [N, C, S] activation (any element strides).
#pragma once

#include <cstddef>

#include "common.hpp"
#include "histogram.hpp"

namespace ls {

// A 3-D input seen as [N, C, S] (logical order), with element strides that may be anything:
// channels-last data is the same tensor with sc = 1 and ss = C.
struct Strided3 {
    const void* data;
    DType dtype;
    i64 n, c, s;
    i64 sn, sc, ss;
};

// Caller-owned outputs, laid out as in layerscope.kernels.ChannelStats.
struct ReduceOut {
    i64* count;           // [C]
    double* mean;         // [C]
    double* m2;           // [C]
    double* min;          // [C]
    double* max;          // [C]
    i64* zeros;           // [C]
    i64* above;           // [T, C]
    i64* nan;             // [C]
    i64* inf;             // [C]
    double* sample_mean;  // [N, C]
};

// The outputs of one call in one buffer of reduce_out_bytes(n, c, t) bytes, 8-byte cells in the order
// count, zeros, nan, inf [C] | above [T, C] | mean, m2, min, max [C] | sample_mean [N, C] (the Python
// face's views of it, and the direct update, read it so).
inline std::size_t reduce_out_bytes(i64 n, i64 c, i64 t) {
    return static_cast<std::size_t>(c) * static_cast<std::size_t>(8 + t + n) * 8;
}
inline ReduceOut reduce_out_at(void* buffer, i64 c, i64 t) {
    i64* ip = static_cast<i64*>(buffer);
    double* fp = reinterpret_cast<double*>(ip + c * (4 + t));
    return {ip, fp, fp + c, fp + 2 * c, fp + 3 * c, ip + c, ip + 4 * c, ip + 2 * c, ip + 3 * c, fp + 4 * c};
}

// thresholds: T float64 values; the count "above" is of finite x with x > t, compared exactly.
// hist (optional): also count every value on that power-of-two grid while it is in cache, into
// hist_counts[bins + 2] (zeroed by the caller), exactly as histogram_pow2 does.
void channel_reduce(const Strided3& x, const double* thresholds, int num_thresholds, const ReduceOut& out,
                    int num_threads, const Pow2Counter* hist = nullptr, i64* hist_counts = nullptr);

}  // namespace ls
