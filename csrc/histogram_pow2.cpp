// Histogram on a power-of-two grid: bin j holds [j·2**e, (j+1)·2**e), the window is bins j0 … j0+bins−1.
//
// The bin of x is floor(x · 2**−e): multiplying by a power of two only changes the exponent, so the
// product is exact unless it overflows (→ ±Inf: far outside any window) or underflows (|q| < 1, where
// only the sign matters: a negative value whose product rounds to −0 is put in bin −1). No comparison
// against edges is needed, and float32/float16/bfloat16 inputs are binned in float32 when the scale
// 2**−e is a normal float32 and every index near the window is an exact float32 integer
// (|j0| + bins ≤ 2**24); otherwise in float64 (exact for every input type).
//
// Each element gets a slot (vectorised: scale, floor, window test, select), then the slots are counted
// into kWays interleaved sub-histograms so that a run of equal bins (the zeros after a ReLU) does not
// serialise on one counter. Slots bins / bins+1 / bins+2 collect finite values below / above the window
// and non-finite values.
// No code here reads the floating-point exception flags: let GCC if-convert and vectorise the selects
// and the float → int conversion, which -ftrapping-math (its default) keeps scalar. Results are the same.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "histogram.hpp"

namespace ls {
namespace {

constexpr int kWays = 8;
constexpr i64 kChunk = 512;        // elements per slot buffer (2 KiB of int32, in L1)
constexpr i64 kMinPerThread = 1 << 15;  // below this a second thread costs more than it saves

template <class F>
struct Grid {
    F scale;  // 2**−e
    F j0, nb;  // first bin and bin count, exact in F
};

// slot[i] for x[i]: its bin − j0 in [0, bins), or bins (below), bins+1 (above), bins+2 (NaN/±Inf).
template <class F>
LS_INLINE void slots(const F* x, i64 len, const Grid<F>& g, std::int32_t* slot) {
    const F big = std::numeric_limits<F>::max();
    const F scale = g.scale, j0 = g.j0, below = g.nb, above = g.nb + F(1), bad = g.nb + F(2);
    // Selects only, with every operand computed before the loop: GCC if-converts (vectorises) them.
#pragma omp simd
    for (i64 i = 0; i < len; ++i) {
        const F v = x[i];
        F q = std::floor(v * scale);
        const F neg = q < F(-1) ? q : F(-1);
        q = v < F(0) ? neg : q;  // a negative value is in bin ≤ −1, also when v·scale underflowed to −0
        const F r = q - j0;      // exact inside the window; keeps its side outside
        F s = r < below ? r : above;
        s = r < F(0) ? below : s;
        s = std::fabs(v) <= big ? s : bad;  // NaN, ±Inf
        slot[i] = static_cast<std::int32_t>(s);
    }
}

LS_INLINE void count_slots(const std::int32_t* slot, i64 len, i64 stride, i64* counts) {
    i64 i = 0;
    for (; i + kWays <= len; i += kWays)
        for (int k = 0; k < kWays; ++k) ++counts[k * stride + slot[i + k]];
    for (; i < len; ++i) ++counts[slot[i]];
}

// rows × len values, row r at x + r·ld, counted into counts (kWays × stride) through float type F; the
// slot buffer fills across rows, so short rows (the runs of a small feature map) cost no more per value
// than one long range.
template <class In, class F>
LS_INLINE void count_rows_impl(const In* x, i64 rows, i64 ld, i64 len, const Grid<F>& g, i64 stride,
                               i64* counts) {
    alignas(64) std::int32_t slot[kChunk];
    alignas(64) F buf[kChunk];
    i64 filled = 0;
    for (i64 r = 0; r < rows; ++r) {
        const In* row = x + r * ld;
        for (i64 i = 0; i < len;) {
            const i64 take = std::min(kChunk - filled, len - i);
            const F* v;
            if constexpr (std::is_same_v<In, F>) {
                v = row + i;
            } else {
                for (i64 k = 0; k < take; ++k) buf[k] = static_cast<F>(to_float(row[i + k]));
                v = buf;
            }
            slots(v, take, g, slot + filled);
            filled += take, i += take;
            if (filled == kChunk) count_slots(slot, filled, stride, counts), filled = 0;
        }
    }
    count_slots(slot, filled, stride, counts);
}

LS_CLONES void pow2_rows(const float* x, i64 rows, i64 ld, i64 len, const Grid<float>& g, i64 stride, i64* counts) {
    count_rows_impl(x, rows, ld, len, g, stride, counts);
}
LS_CLONES void pow2_rows(const float* x, i64 rows, i64 ld, i64 len, const Grid<double>& g, i64 stride, i64* counts) {
    count_rows_impl(x, rows, ld, len, g, stride, counts);
}
LS_CLONES void pow2_rows(const double* x, i64 rows, i64 ld, i64 len, const Grid<double>& g, i64 stride,
                         i64* counts) {
    count_rows_impl(x, rows, ld, len, g, stride, counts);
}

#define LS_POW2_RANGE(T, F)                                                                              \
    LS_CLONES void pow2_range(const T* x, i64 begin, i64 end, const Grid<F>& g, i64 stride, i64* counts) { \
        count_rows_impl(x + begin, 1, 0, end - begin, g, stride, counts);                                \
    }
LS_POW2_RANGE(float, float)
LS_POW2_RANGE(f16, float)
LS_POW2_RANGE(bf16, float)
LS_POW2_RANGE(float, double)
LS_POW2_RANGE(double, double)
LS_POW2_RANGE(f16, double)
LS_POW2_RANGE(bf16, double)
#undef LS_POW2_RANGE

// float32 binning is exact for non-double inputs when 2**−e is a normal float32 and every integer
// within a bin of the window is exact in float32.
bool float32_grid(DType dt, int e, i64 j0, i64 bins) {
    return dt != DType::f64 && e >= -126 && e <= 126 && std::llabs(j0) + bins <= (i64(1) << 24);
}

template <class In, class F>
void run(const In* x, i64 n, const Grid<F>& g, i64 stride, std::vector<std::vector<i64>>& parts, int threads) {
#pragma omp parallel num_threads(threads)
    {
        const int tid = thread_id();
        i64 begin, end;
        split_range(n, team_size(), tid, begin, end);
        pow2_range(x, begin, end, g, stride, parts[tid].data());
    }
}

}  // namespace

void check_pow2_grid(int e, i64 j0, i64 bins) {
    if (bins < 1 || e < -1022 || e > 1023 || std::llabs(j0) + bins > (i64(1) << 53))
        throw std::invalid_argument("histogram_pow2: need bins >= 1, -1022 <= e <= 1023, |j0| + bins <= 2**53");
}

i64 pow2_table_size(i64 bins) { return kWays * (bins + 3); }

void pow2_count(const float* x, i64 rows, i64 ld, i64 len, const Pow2Counter& g, i64* table) {
    if (float32_grid(DType::f32, g.e, g.j0, g.bins)) {
        const Grid<float> grid{std::ldexp(1.0f, -g.e), static_cast<float>(g.j0), static_cast<float>(g.bins)};
        pow2_rows(x, rows, ld, len, grid, g.bins + 3, table);
    } else {
        const Grid<double> grid{std::ldexp(1.0, -g.e), static_cast<double>(g.j0), static_cast<double>(g.bins)};
        pow2_rows(x, rows, ld, len, grid, g.bins + 3, table);
    }
}

void pow2_count(const double* x, i64 rows, i64 ld, i64 len, const Pow2Counter& g, i64* table) {
    const Grid<double> grid{std::ldexp(1.0, -g.e), static_cast<double>(g.j0), static_cast<double>(g.bins)};
    pow2_rows(x, rows, ld, len, grid, g.bins + 3, table);
}

void pow2_fold(const i64* table, i64 bins, i64* counts) {
    const i64 stride = bins + 3;
    for (i64 j = 0; j < kWays * stride; ++j) {
        const i64 slot = j % stride;
        if (slot < bins + 2) counts[slot] += table[j];
    }
}

void histogram_pow2(const void* x, DType dtype, i64 n, int e, i64 j0, i64 bins, i64* counts, int num_threads) {
    check_pow2_grid(e, j0, bins);
    const i64 stride = bins + 3;
    const i64 most = std::max<i64>(1, n / kMinPerThread);
    const int threads = static_cast<int>(std::min<i64>(clamp_threads(num_threads), most));
    std::vector<std::vector<i64>> parts(threads, std::vector<i64>(static_cast<std::size_t>(kWays) * stride, 0));
    const bool f32 = float32_grid(dtype, e, j0, bins);
    dispatch(dtype, [&](auto tag) {
        using In = decltype(tag);
        const In* data = static_cast<const In*>(x);
        if constexpr (!std::is_same_v<In, double>) {
            if (f32) {
                const Grid<float> g{std::ldexp(1.0f, -e), static_cast<float>(j0), static_cast<float>(bins)};
                run(data, n, g, stride, parts, threads);
                return;
            }
        }
        const Grid<double> g{std::ldexp(1.0, -e), static_cast<double>(j0), static_cast<double>(bins)};
        run(data, n, g, stride, parts, threads);
    });
    for (const auto& part : parts) pow2_fold(part.data(), bins, counts);
}

}  // namespace ls
