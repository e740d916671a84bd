// One call per layer and batch for the per-batch native work of the ``spectrum``, ``spatial`` and
// ``covariance`` accumulators of one layer (src/layerscope/stats/_joint.py builds the plan and calls it
// through ctypes; each accumulator's own path, native or torch, is the reference and the fallback).
//
// The probe updates every accumulator of a layer with the same activation and channel reduction. When
// these three (or any two of them) run their steady-state native calls, the layer would pay five ctypes
// calls and three Python updates per batch (the finiteness test, the spectrum's fold and Welch sums, the
// cell energies, the covariance sums), each of which starts with cold caches right after the layer's own
// forward kernel. Here the same kernels run back to back from one call, on the sampled rows while they
// are still in cache, with the fixed arguments of each taken from a plan array built once per layer and
// batch shape; the per-batch arguments are the activation and the reduction's tensors. Nothing is done
// unless the batch is all finite (the NaN and Inf counts of the reduction are all zero): the caller then
// runs each accumulator's own update, which handles the non-finite values.
#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "common.hpp"

using ls::i64;

extern "C" {
int ls_welch_parts(const void* x, int dtype, i64 n, i64 c, i64 t, i64 sn, i64 sc, i64 st, i64 L,
                   const void* window, double* out);
void ls_fold_reduction(i64 c, i64 t, i64* count, const i64* r_count, double* mn, const double* r_min, double* mx,
                       const double* r_max, i64* above, const i64* r_above, i64* segments, i64 n_seg);
void ls_cell_energy(const void* x, int dtype, i64 n, i64 c, i64 p, i64 sn, i64 sc, i64 sp,
                    const std::int32_t* cell, i64 cells, double* out);
int ls_cov_update(const void* x, int dtype, i64 n, i64 c, i64 s, i64 sn, i64 sc, i64 ss, const double* ref,
                  double* sums);
int ls_all_zero2(const i64* a, const i64* b, i64 n);
}

namespace {

// The plan: int64 words (pointers stored as integers), laid out as the JOINT_* offsets of
// src/layerscope/stats/_joint.py:
//   [0] dtype code, [1] channels c, [2] thresholds t, [3] parts present (bit 0 Welch, 1 fold, 2 cells, 3 cov)
//   [4..10]  Welch: n, c, t, sn, sc, st, L      [11] window   [12] power parts
//   [13..17] fold: count, min, max, above, segments           [18] segments per channel
//   [19..24] cells: n, c, p, sn, sc, sp          [25] cell     [26] cells   [27] energy sums
//   [28..33] covariance: n, c, s, sn, sc, ss     [34] ref      [35] sums
// Welch values (samples × channels × time) from which the two halves go to two threads: below, the
// threads' start-up costs about as much as the overlap saves.
constexpr i64 PARALLEL_MIN = 8192;

template <class P>
P* at(const i64* plan, int i) {
    return reinterpret_cast<P*>(static_cast<std::intptr_t>(plan[i]));
}

}  // namespace

extern "C" {

// Returns 0 (done), 1 (the batch is not all finite: nothing done) or 2 (the Welch arguments are out of
// range: nothing done).
LS_EXPORT int ls_layer_update(const void* x, const i64* nan, const i64* inf, const i64* r_count,
                              const double* r_min, const double* r_max, const i64* r_above, const i64* plan) {
    const int dtype = static_cast<int>(plan[0]);
    const i64 c = plan[1], parts = plan[3];
    if (!ls_all_zero2(nan, inf, c)) return 1;
    const i64 L = plan[10];
    if ((parts & 1) && (L < 8 || L > (i64{1} << 16) || (L & (L - 1)) != 0 || plan[6] < L || plan[4] < 0 || plan[5] < 0))
        return 2;  // what ls_welch_parts refuses (the plan was checked when built): before anything is written
    auto welch = [&] {
        if (parts & 1)
            ls_welch_parts(x, dtype, plan[4], plan[5], plan[6], plan[7], plan[8], plan[9], plan[10],
                           at<const void>(plan, 11), at<double>(plan, 12));
    };
    auto rest = [&] {
        if (parts & 2)
            ls_fold_reduction(c, plan[2], at<i64>(plan, 13), r_count, at<double>(plan, 14), r_min,
                              at<double>(plan, 15), r_max, at<i64>(plan, 16), r_above, at<i64>(plan, 17), plan[18]);
        if (parts & 4)
            ls_cell_energy(x, dtype, plan[19], plan[20], plan[21], plan[22], plan[23], plan[24],
                           at<const std::int32_t>(plan, 25), plan[26], at<double>(plan, 27));
        if (parts & 8)
            ls_cov_update(x, dtype, plan[28], plan[29], plan[30], plan[31], plan[32], plan[33],
                          at<const double>(plan, 34), at<double>(plan, 35));
    };
    // Two threads when the OpenMP runtime allows them (torch.set_num_threads sets it: torch and the
    // extension share libgomp) and both halves are worth a thread: the Welch sums on one, the fold, cell
    // energies and covariance on the other. They write disjoint state, each in the same order as on one
    // thread, so the result does not depend on the thread count.
#if defined(_OPENMP)
    const bool split = (parts & 1) && (parts & 12) && plan[4] * plan[5] * plan[6] >= PARALLEL_MIN &&
                       omp_get_max_threads() >= 2 && !omp_in_parallel();
    if (split) {
#pragma omp parallel num_threads(2)
        {
            if (omp_get_thread_num() == 0)
                welch();
            else
                rest();
        }
        return 0;
    }
#endif
    welch();
    rest();
    return 0;
}

}  // extern "C"
