// Small in-place accumulations of the ``spectrum`` and ``spatial`` accumulators, one ctypes call each
// where torch dispatches three to four kernels (src/layerscope/kernels/_native_accumulate.py calls them;
// the torch code in stats/spectrum.py and stats/spatial.py is the reference and the fallback).
//
// - ls_fold_reduction: count += r.count, min = min(min, r.min), max = max(max, r.max),
//   above += r.above, segments += n_seg (segments may be null). int64 / float64, C-contiguous.
// - ls_cell_energy: out[c, cell[p]] += Σ_n x[n, c, p]² over a strided [N, C, P] float32/float64 input,
//   squares in the input's precision, sums in float64 (all finite: the caller checks).
#include <cstdint>
#include <vector>

#include "common.hpp"

namespace {

using ls::i64;

template <class T>
LS_INLINE void cell_energy(const T* x, i64 n, i64 c, i64 p, i64 sn, i64 sc, i64 sp, const std::int32_t* cell,
                           i64 cells, double* out) {
    if (sp <= sc) {  // channels first: each channel's positions are a row
        std::vector<double> row(static_cast<std::size_t>(p));
        for (i64 ch = 0; ch < c; ++ch) {
            for (i64 j = 0; j < p; ++j) row[j] = 0.0;
            for (i64 i = 0; i < n; ++i) {
                const T* s = x + i * sn + ch * sc;
#pragma omp simd
                for (i64 j = 0; j < p; ++j) row[j] += static_cast<double>(s[j * sp] * s[j * sp]);
            }
            double* o = out + ch * cells;
            for (i64 j = 0; j < p; ++j) o[cell[j]] += row[j];
        }
        return;
    }
    // channels last: each position's channels are a row
    std::vector<double> acc(static_cast<std::size_t>(p * c), 0.0);  // [p][c]
    for (i64 i = 0; i < n; ++i) {
        for (i64 j = 0; j < p; ++j) {
            const T* s = x + i * sn + j * sp;
            double* a = acc.data() + j * c;
#pragma omp simd
            for (i64 ch = 0; ch < c; ++ch) a[ch] += static_cast<double>(s[ch * sc] * s[ch * sc]);
        }
    }
    for (i64 j = 0; j < p; ++j)
        for (i64 ch = 0; ch < c; ++ch) out[ch * cells + cell[j]] += acc[j * c + ch];
}

LS_CLONES void cell_energy_f32(const float* x, i64 n, i64 c, i64 p, i64 sn, i64 sc, i64 sp, const std::int32_t* cell,
                               i64 cells, double* out) {
    cell_energy<float>(x, n, c, p, sn, sc, sp, cell, cells, out);
}

LS_CLONES void cell_energy_f64(const double* x, i64 n, i64 c, i64 p, i64 sn, i64 sc, i64 sp,
                               const std::int32_t* cell, i64 cells, double* out) {
    cell_energy<double>(x, n, c, p, sn, sc, sp, cell, cells, out);
}

}  // namespace

extern "C" {

LS_EXPORT void ls_fold_reduction(i64 c, i64 t, i64* count, const i64* r_count,
                                                              double* mn, const double* r_min, double* mx,
                                                              const double* r_max, i64* above,
                                                              const i64* r_above, i64* segments, i64 n_seg) {
    for (i64 i = 0; i < c; ++i) {
        count[i] += r_count[i];
        // torch.minimum / maximum: NaN propagates (the reduction's extremes are over finite values: none)
        const double a = mn[i], b = r_min[i];
        mn[i] = (a != a || b != b) ? a + b : (b < a ? b : a);
        const double u = mx[i], v = r_max[i];
        mx[i] = (u != u || v != v) ? u + v : (v > u ? v : u);
    }
    for (i64 i = 0; i < c * t; ++i) above[i] += r_above[i];
    if (segments != nullptr)
        for (i64 i = 0; i < c; ++i) segments[i] += n_seg;
}

// x: [n, c, p] with element strides, float32 (dtype 0) or float64 (dtype 1); cell: int32 [p], each in
// [0, cells); out: float64 [c, cells], C-contiguous, added to.
LS_EXPORT void ls_cell_energy(const void* x, int dtype, i64 n, i64 c, i64 p, i64 sn,
                                                           i64 sc, i64 sp, const std::int32_t* cell, i64 cells,
                                                           double* out) {
    if (dtype == 0)
        cell_energy_f32(static_cast<const float*>(x), n, c, p, sn, sc, sp, cell, cells, out);
    else
        cell_energy_f64(static_cast<const double*>(x), n, c, p, sn, sc, sp, cell, cells, out);
}

}  // extern "C"
