// Histogram on a power-of-two grid: bin j holds [j·2**e, (j+1)·2**e), the window is bins j0 … j0+bins−1.
//
// The bin of x is floor(x · 2**−e): multiplying by a power of two only changes the exponent, so the
// product is exact unless it overflows (→ ±Inf: far outside any window) or underflows (|q| < 1, where
// only the sign matters: a negative value whose product rounds to −0 is put in bin −1). No comparison
// against edges is needed, and float32/float16/bfloat16 inputs are binned in float32 when the scale
// 2**−e is a normal float32 and every index near the window, and every slot, is an exact float32
// integer (|j0| + bins ≤ 2**24, bins + 2 ≤ 2**24); otherwise in float64 (exact for every input type).
//
// Each element gets a slot: its bin q minus j0 − 1, clamped to [0, bins + 1], so slot 0 collects the
// finite values below the window, slots 1 … bins its bins and slot bins+1 the finite values above;
// non-finite values get slot bins+2. The subtraction is exact inside the window and, rounding being
// monotonic, keeps its side outside. Then the slots are counted:
// - portable path: into kWays interleaved sub-histograms, so that a run of equal slots (the zeros after
//   a ReLU) does not serialise on one counter;
// - AVX-512 path (float32 binning, CPU checked at run time): the slots of 16 values are computed in a
//   register; those equal to the slot of 0.0 (the "hot" slot: ReLU zeros, and anything near 0) are only
//   counted, by a popcount, and the others are compressed into a buffer. The buffer is counted two slots
//   at a time, as PAIRS in a joint (bins+3)² uint32 table — one increment per two values — which is
//   added into the int64 sub-histograms before any entry can overflow and at the end (pow2_fold): each
//   pair counts once for each of its two slots. Data with few values in the hot slot (no ReLU before it)
//   skips the split: after a measured chunk with under 1/8 hot values, all 16 slots go to pairs directly
//   (−20% time on normal data). (uint16 entries would halve the table, but measured
//   twice as slow per increment on Zen: neighbouring 16-bit counters seem to serialise.)
// No code here reads the floating-point exception flags: let GCC if-convert and vectorise the selects
// and the float → int conversion, which -ftrapping-math (its default) keeps scalar. Results are the same.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "histogram.hpp"
#include "pow2_pairs.hpp"


namespace ls {
namespace {

using namespace pow2;  // the pair counter and its table (pow2_pairs.hpp)

constexpr i64 kConvert = 4096;          // half inputs: elements converted to float32 at a time
constexpr i64 kMinPerThread = 1 << 15;  // below this a second thread costs more than it saves




// slot[i] for x[i] (see the top of the file).
template <class F>
LS_INLINE void slots(const F* x, i64 len, const Grid<F>& g, std::int32_t* slot) {
    const F big = std::numeric_limits<F>::max();
    const F scale = g.scale, base = g.base, top = g.nb + F(1), bad = g.nb + F(2);
    // Selects only, with every operand computed before the loop: GCC if-converts (vectorises) them.
#pragma omp simd
    for (i64 i = 0; i < len; ++i) {
        const F v = x[i];
        F q = std::floor(v * scale);
        const F neg = q < F(-1) ? q : F(-1);
        q = v < F(0) ? neg : q;  // a negative value is in bin ≤ −1, also when v·scale underflowed to −0
        F s = q - base;
        s = s > F(0) ? s : F(0);
        s = s < top ? s : top;
        s = std::fabs(v) <= big ? s : bad;  // NaN, ±Inf
        slot[i] = static_cast<std::int32_t>(s);
    }
}


// counts[a] and counts[b] += joint[a·S + b], for every pair (a, b). The column sums go to a local array
// first: a may_alias table could alias counts, and the loops would not vectorise (3× slower).
LS_CLONES void add_joint(const u32* joint, i64 s, i64* counts) {
    i64 column[kMaxPairSlots] = {};
    for (i64 a = 0; a < s; ++a) {
        const u32* row = joint + a * s;
        i64 sum = 0;
        for (i64 b = 0; b < s; ++b) sum += row[b], column[b] += row[b];
        counts[a] += sum;
    }
    for (i64 b = 0; b < s; ++b) counts[b] += column[b];
}


// rows × len values, row r at x + r·ld, counted into the sub-histograms through float type F; the slot
// buffer fills across rows, so short rows (the runs of a small feature map) cost no more per value
// than one long range.
template <class In, class F>
LS_INLINE void count_rows_impl(const In* x, i64 rows, i64 ld, i64 len, const Grid<F>& g, const Table& t) {
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
            if (filled == kChunk) count_slots(slot, filled, t.slots, t.ways), filled = 0;
        }
    }
    count_slots(slot, filled, t.slots, t.ways);
}

#ifdef LS_POW2_AVX512
// rows × len values, row r at x + r·ld, through pair_push; `ahead` (optional) is stepped once per 16
// values.
LS_AVX512 void count_avx512(const float* x, i64 rows, i64 ld, i64 len, const Grid<float>& g, i64 hot_slot,
                            const Table& t, LineAhead* ahead_or_null = nullptr) {
    LineAhead ahead = ahead_or_null ? *ahead_or_null : LineAhead();  // a local copy (see LineAhead)
    PairBuffers buffers;
    const PairGrid pg = pair_grid(g, hot_slot);
    PairState st;
    const i64 whole = len & ~i64(15);
    for (i64 r = 0; r < rows; ++r) {
        const float* row = x + r * ld;
        for (i64 i = 0; i < whole; i += 16) {
            pair_push(_mm512_loadu_ps(row + i), 0xffff, true, pg, t, buffers, st);
            ahead.step();
        }
        if (whole < len) {
            // a masked load only for the tail: masked loads that miss the cache stall (2× slower from DRAM)
            const __mmask16 valid = static_cast<__mmask16>((1u << (len - whole)) - 1);
            pair_push(_mm512_maskz_loadu_ps(valid, row + whole), valid, false, pg, t, buffers, st);
            ahead.step();
        }
    }
    pair_finish(pg, t, buffers, st);
    if (ahead_or_null) *ahead_or_null = ahead;
}
#endif



LS_CLONES void pow2_rows(const float* x, i64 rows, i64 ld, i64 len, const Grid<float>& g, const Table& t) {
    count_rows_impl(x, rows, ld, len, g, t);
}
LS_CLONES void pow2_rows(const float* x, i64 rows, i64 ld, i64 len, const Grid<double>& g, const Table& t) {
    count_rows_impl(x, rows, ld, len, g, t);
}
LS_CLONES void pow2_rows(const double* x, i64 rows, i64 ld, i64 len, const Grid<double>& g, const Table& t) {
    count_rows_impl(x, rows, ld, len, g, t);
}

#define LS_POW2_RANGE(T, F)                                                                          \
    LS_CLONES void pow2_range(const T* x, i64 begin, i64 end, const Grid<F>& g, const Table& t) {  \
        count_rows_impl(x + begin, 1, 0, end - begin, g, t);                                       \
    }
LS_POW2_RANGE(float, float)
LS_POW2_RANGE(f16, float)
LS_POW2_RANGE(bf16, float)
LS_POW2_RANGE(float, double)
LS_POW2_RANGE(double, double)
LS_POW2_RANGE(f16, double)
LS_POW2_RANGE(bf16, double)
#undef LS_POW2_RANGE

// Whole-tensor counting of [begin, end) into table (one thread's).
template <class In>
void count_range(const In* x, i64 begin, i64 end, const Pow2Counter& pc, bool f32, i64* table) {
    const Table t = layout(table, pc.bins);
    if constexpr (!std::is_same_v<In, double>) {
        if (f32) {
            const Grid<float> g = make_grid<float>(pc);
#ifdef LS_POW2_AVX512
            if (has_avx512()) {
                if constexpr (std::is_same_v<In, float>) {
                    count_avx512(x + begin, 1, 0, end - begin, g, zero_slot(pc), t);
                } else {
                    alignas(64) float buf[kConvert];
                    for (i64 i = begin; i < end; i += kConvert) {
                        const i64 take = std::min(kConvert, end - i);
                        for (i64 k = 0; k < take; ++k) buf[k] = to_float(x[i + k]);
                        count_avx512(buf, 1, 0, take, g, zero_slot(pc), t);
                    }
                }
                return;
            }
#endif
            pow2_range(x, begin, end, g, t);
            return;
        }
    }
    pow2_range(x, begin, end, make_grid<double>(pc), t);
}

}  // namespace

namespace pow2 {
void flush_joint(const Table& t) {
    add_joint(t.joint, t.slots, t.ways);
    std::fill_n(t.joint, t.slots * t.slots, std::uint32_t(0));
    *t.pending = 0;
}

#ifdef LS_POW2_AVX512
bool has_avx512() {
    static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                            __builtin_cpu_supports("popcnt");
    return yes;
}
#endif
}  // namespace pow2

void check_pow2_grid(int e, i64 j0, i64 bins) {
    if (bins < 1 || e < -1022 || e > 1023 || std::llabs(j0) + bins > (i64(1) << 53))
        throw std::invalid_argument("histogram_pow2: need bins >= 1, -1022 <= e <= 1023, |j0| + bins <= 2**53");
}

i64 pow2_table_size(i64 bins) { return 1 + kWays * (bins + 3) + joint_words(bins + 3); }

void pow2_count(const float* x, i64 rows, i64 ld, i64 len, const Pow2Counter& g, i64* table, LineAhead* ahead) {
    const Table t = layout(table, g.bins);
    if (float32_grid(DType::f32, g.e, g.j0, g.bins)) {
#ifdef LS_POW2_AVX512
        if (has_avx512()) return count_avx512(x, rows, ld, len, make_grid<float>(g), zero_slot(g), t, ahead);
#endif
        pow2_rows(x, rows, ld, len, make_grid<float>(g), t);
    } else {
        pow2_rows(x, rows, ld, len, make_grid<double>(g), t);
    }
}

void pow2_count(const double* x, i64 rows, i64 ld, i64 len, const Pow2Counter& g, i64* table) {
    pow2_rows(x, rows, ld, len, make_grid<double>(g), layout(table, g.bins));
}

void pow2_fold(const i64* table, i64 bins, i64* counts) {
    const Table t = layout(const_cast<i64*>(table), bins);  // read only
    std::vector<i64> slot(t.slots, 0);
    for (int w = 0; w < kWays; ++w)
        for (i64 j = 0; j < t.slots; ++j) slot[j] += t.ways[w * t.slots + j];
    if (t.joint) add_joint(t.joint, t.slots, slot.data());
    for (i64 j = 0; j < bins; ++j) counts[j] += slot[j + 1];
    counts[bins] += slot[0];
    counts[bins + 1] += slot[bins + 1];  // slot bins+2 (NaN, ±Inf) is not counted
}

void histogram_pow2(const void* x, DType dtype, i64 n, int e, i64 j0, i64 bins, i64* counts, int num_threads) {
    check_pow2_grid(e, j0, bins);
    const Pow2Counter pc{e, j0, bins};
    const i64 most = std::max<i64>(1, n / kMinPerThread);
    const int threads = static_cast<int>(std::min<i64>(clamp_threads(num_threads), most));
    std::vector<std::vector<i64>> parts(threads, std::vector<i64>(static_cast<std::size_t>(pow2_table_size(bins)), 0));
    const bool f32 = float32_grid(dtype, e, j0, bins);
    dispatch(dtype, [&](auto tag) {
        using In = decltype(tag);
        const In* data = static_cast<const In*>(x);
#pragma omp parallel num_threads(threads)
        {
            const int tid = thread_id();
            i64 begin, end;
            split_range(n, team_size(), tid, begin, end);
            count_range(data, begin, end, pc, f32, parts[tid].data());
        }
    });
    for (const auto& part : parts) pow2_fold(part.data(), bins, counts);
}

}  // namespace ls
