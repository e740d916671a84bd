// Histogram of values into fixed bins over [lo, hi].
#pragma once

#include "common.hpp"

namespace ls {

// counts[bins] (zeroed by the caller) += number of x[i] with edge[j] <= x < edge[j+1], where
// edge[j] = lo + j * ((hi - lo) / bins) in float64 for j < bins and edge[bins] = hi; the last bin also
// holds x == hi. Values outside [lo, hi], NaN and ±Inf are not counted. x is contiguous, n values.
void histogram(const void* x, DType dtype, i64 n, i64 bins, double lo, double hi, i64* counts,
               int num_threads);

}  // namespace ls
