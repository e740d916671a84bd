// Histogram of values into fixed bins over [lo, hi].
#pragma once

#include "common.hpp"

namespace ls {

// counts[bins] (zeroed by the caller) += number of x[i] with edge[j] <= x < edge[j+1], where
// edge[j] = lo + j * ((hi - lo) / bins) in float64 for j < bins and edge[bins] = hi; the last bin also
// holds x == hi. Values outside [lo, hi], NaN and ±Inf are not counted. x is contiguous, n values.
void histogram(const void* x, DType dtype, i64 n, i64 bins, double lo, double hi, i64* counts,
               int num_threads);

// Power-of-two grid (see histogram_pow2.cpp): counts[bins + 2] (zeroed by the caller) += number of
// finite x[i] with floor(x[i] · 2**−e) == j0 + j, for j in [0, bins); counts[bins] and counts[bins + 1]
// receive the finite values below and above that window. NaN and ±Inf are not counted. The bins are
// exact for every input type. Needs bins >= 1, -1022 <= e <= 1023, |j0| + bins <= 2**53 (else throws).
void histogram_pow2(const void* x, DType dtype, i64 n, int e, i64 j0, i64 bins, i64* counts, int num_threads);

// The same counting, one contiguous piece at a time, for a kernel that already holds the values in cache
// (the fused channel reduction). A Pow2Counter's table (pow2_table_size(bins) int64, zeroed by the
// caller) is private to one thread; pow2_fold adds a table into counts[bins + 2] as histogram_pow2
// fills it. x holds float32 or float64 values (half inputs arrive upcast, exactly).
struct Pow2Counter {
    int e;
    i64 j0, bins;
};
void check_pow2_grid(int e, i64 j0, i64 bins);  // throws std::invalid_argument as histogram_pow2 does
i64 pow2_table_size(i64 bins);
// rows × len values, row r at x + r·ld; `ahead` (optional): lines to fetch meanwhile, one per 16 values
// counted (the AVX-512 float32 path; the others leave it)
void pow2_count(const float* x, i64 rows, i64 ld, i64 len, const Pow2Counter& g, i64* table,
                LineAhead* ahead = nullptr);
void pow2_count(const double* x, i64 rows, i64 ld, i64 len, const Pow2Counter& g, i64* table);
void pow2_fold(const i64* table, i64 bins, i64* counts);

}  // namespace ls
