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

// The AVX-512 path needs GCC/Clang's target attribute and x86 intrinsics; a build with LS_NO_CLONES
// (see common.hpp) keeps only the portable path.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(LS_NO_CLONES)
#define LS_POW2_AVX512 1
#include <immintrin.h>
#define LS_AVX512 __attribute__((target("avx512f,avx512dq,popcnt")))
// GCC 12's own intrinsics trip its -Wmaybe-uninitialized (_mm512_undefined_ps, GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace ls {
namespace {

constexpr int kWays = 8;
constexpr i64 kChunk = 512;             // elements per slot buffer (2 KiB of int32, in L1)
constexpr i64 kConvert = 4096;          // half inputs: elements converted to float32 at a time
constexpr i64 kMinPerThread = 1 << 15;  // below this a second thread costs more than it saves
constexpr i64 kMaxPairSlots = 72;       // joint table when (bins + 3)² uint32 fit in ~20 KiB (bins ≤ 69)
constexpr int kPlainChunks = 16;        // chunks counted without the hot-slot split between two measures
// Pairs counted in a joint table before it is added into the sub-histograms: far below uint32's limit,
// so that inputs of a few million values (the tests) exercise the flush; one flush per 2M values costs
// nothing.
constexpr i64 kMaxPending = i64(1) << 20;

// The joint table is uint32 inside the caller's int64 table.
#if defined(__GNUC__)
using u32 = std::uint32_t __attribute__((may_alias));
#else
using u32 = std::uint32_t;
#endif

template <class F>
struct Grid {
    F scale;  // 2**−e
    F base;   // j0 − 1: slot = bin − base
    F nb;     // bin count; all exact in F
};

template <class F>
Grid<F> make_grid(const Pow2Counter& g) {
    return {std::ldexp(F(1), -g.e), static_cast<F>(g.j0 - 1), static_cast<F>(g.bins)};
}

// A Pow2Counter table, pow2_table_size(bins) int64 words:
//   [0]                      pairs counted in the joint table since its last flush
//   [1, 1 + kWays·S)         kWays interleaved int64 sub-histograms of S = bins + 3 slots
//   [1 + kWays·S, …)         when S ≤ kMaxPairSlots: the joint table, S × S uint32, entry a·S + b
struct Table {
    i64* pending;
    i64* ways;
    u32* joint;  // null when S > kMaxPairSlots
    i64 slots;   // S
};

i64 joint_words(i64 slots) { return slots <= kMaxPairSlots ? (slots * slots + 1) / 2 : 0; }

Table layout(i64* table, i64 bins) {
    const i64 s = bins + 3;
    u32* joint = joint_words(s) ? reinterpret_cast<u32*>(table + 1 + kWays * s) : nullptr;
    return {table, table + 1, joint, s};
}

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

LS_INLINE void count_slots(const std::int32_t* slot, i64 len, i64 stride, i64* counts) {
    i64 i = 0;
    for (; i + kWays <= len; i += kWays)
        for (int k = 0; k < kWays; ++k) ++counts[k * stride + slot[i + k]];
    for (; i < len; ++i) ++counts[slot[i]];
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

void flush_joint(const Table& t) {
    add_joint(t.joint, t.slots, t.ways);
    std::fill_n(t.joint, t.slots * t.slots, std::uint32_t(0));
    *t.pending = 0;
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
bool has_avx512() {
    static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                            __builtin_cpu_supports("popcnt");
    return yes;
}

// ++joint[·] for the two pair indices at p (one load fetches both).
LS_AVX512 LS_INLINE void count_two(const std::int32_t* p, u32* joint) {
    std::uint64_t two;
    std::memcpy(&two, p, sizeof two);
    ++joint[static_cast<std::uint32_t>(two)];
    ++joint[two >> 32];
}

// Pair indices a·S + b into out for the slots (a, b) = (buf[k + i], buf[k + 16 + i]) of each whole 32
// of buf[0, n); the last n mod 32 slots move to the front of buf and n becomes their count (buf has
// room for 32 past n). Returns the number of pairs, a multiple of 16, already added to the pending
// count (the joint table flushed first if they would not fit).
LS_AVX512 LS_INLINE i64 make_pairs(std::int32_t* buf, i64& n, const Table& t, std::int32_t* out) {
    const i64 full = n & ~i64(31), pairs = full / 2;
    if (*t.pending + pairs > kMaxPending) flush_joint(t);
    *t.pending += pairs;
    const __m512i s = _mm512_set1_epi32(static_cast<int>(t.slots));
    for (i64 k = 0; k < full; k += 32) {
        const __m512i a = _mm512_load_si512(buf + k), b = _mm512_load_si512(buf + k + 16);
        _mm512_store_si512(out + k / 2, _mm512_add_epi32(_mm512_mullo_epi32(a, s), b));
    }
    const __m512i rest0 = _mm512_load_si512(buf + full), rest1 = _mm512_load_si512(buf + full + 16);
    _mm512_store_si512(buf, rest0);
    _mm512_store_si512(buf + 16, rest1);
    n -= full;
    return pairs;
}

// The slots of 16 values (as slots() gives them): floor being monotonic, the bin of v·2**−e clamped to
// [j0 − 1, j0 + bins] is its bin clamped there, so one float → int conversion rounding down gives both
// the bin and the sides; then minus j0 − 1, and bins + 2 for NaN and ±Inf.
struct Slots16 {
    __m512 scale, lo, hi;  // lo = j0 − 1, hi = j0 + bins (exact float32 integers)
    __m512i base, bad;     // j0 − 1, bins + 2
};

LS_AVX512 LS_INLINE __m512i slots16(__m512 v, const Slots16& g) {
    __m512 y = _mm512_mul_ps(v, g.scale);
    // a negative value is in bin ≤ −1, also when v·scale underflowed to −0
    y = _mm512_mask_min_ps(y, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), y, _mm512_set1_ps(-1.0f));
    y = _mm512_min_ps(_mm512_max_ps(y, g.lo), g.hi);  // NaN → lo, replaced below
    const __m512i bin = _mm512_cvt_roundps_epi32(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    return _mm512_mask_mov_epi32(_mm512_sub_epi32(bin, g.base), _mm512_fpclass_ps_mask(v, 0x99), g.bad);  // NaN, ±Inf
}

// The buffer of slots is counted in pairs while the slots of the next buffer are computed: each 16
// values computed, 8 pairs of the last buffer are counted (16 values add at most 8 pairs), so that the
// loads and stores of the increments overlap the vector work instead of following it (−13% time on
// normal data). Without a joint table (many bins) the buffer is counted one slot at a time, when full.
LS_AVX512 void count_avx512(const float* x, i64 rows, i64 ld, i64 len, const Grid<float>& g, i64 hot_slot,
                            const Table& t, LineAhead* ahead_or_null = nullptr) {
    LineAhead ahead = ahead_or_null ? *ahead_or_null : LineAhead();  // a local copy (see LineAhead)
    alignas(64) std::int32_t buf[kChunk + 48];         // + one vector of slots, + room for make_pairs' move
    alignas(64) std::int32_t pair[(kChunk + 16) / 2];  // pair indices of the last buffer
    const Slots16 s16{_mm512_set1_ps(g.scale), _mm512_set1_ps(g.base), _mm512_set1_ps(g.base + g.nb + 1),
                      _mm512_set1_epi32(static_cast<int>(g.base)), _mm512_set1_epi32(static_cast<int>(g.nb) + 2)};
    const __m512i hot = _mm512_set1_epi32(static_cast<int>(hot_slot));
    u32* joint = t.joint;
    i64 n = 0, hot_count = 0, pairs = 0, done = 0;  // done: pairs counted so far
    i64 n_mark = 0, hot_mark = 0;  // n and hot_count after the last chunk's pairs were made
    int plain = 0;                 // chunks left to run without the hot-slot split
    for (i64 r = 0; r < rows; ++r) {
        const float* row = x + r * ld;
        for (i64 i = 0; i < len; i += 16) {
            const bool whole = len - i >= 16;
            const __mmask16 valid = whole ? 0xffff : static_cast<__mmask16>((1u << (len - i)) - 1);
            // a masked load only for the tail: masked loads that miss the cache stall (2× slower from DRAM)
            const __m512 v = whole ? _mm512_loadu_ps(row + i) : _mm512_maskz_loadu_ps(valid, row + i);
            const __m512i s = slots16(v, s16);
            ahead.step();
            if (plain && whole) {  // few hot values lately: all 16 slots go to pairs, no compare/compress
                _mm512_storeu_si512(buf + n, s);
                n += 16;
            } else {
                const __mmask16 keep = _mm512_mask_cmpneq_epi32_mask(valid, s, hot);
                hot_count += _mm_popcnt_u32(valid ^ keep);
                _mm512_storeu_si512(buf + n, _mm512_maskz_compress_epi32(keep, s));
                n += _mm_popcnt_u32(keep);
            }
            if (done < pairs) {  // pairs − done is a multiple of 8
                count_two(pair + done, joint), count_two(pair + done + 2, joint);
                count_two(pair + done + 4, joint), count_two(pair + done + 6, joint);
                done += 8;
            }
            if (n > kChunk && joint) {
                for (; done < pairs; done += 2) count_two(pair + done, joint);
                // Split off the hot slot only where it pays: when under 1/8 of the values of a chunk
                // counted with the split were hot, the next kPlainChunks chunks count every slot in pairs
                // (a (hot, hot) pair, under 1/64 of them, rarely serialises on its counter), then one
                // chunk measures again. Counts are the same either way.
                const i64 hot_new = hot_count - hot_mark, values = n - n_mark + hot_new;
                pairs = make_pairs(buf, n, t, pair), done = 0;
                if (plain) --plain;
                else plain = hot_new * 8 < values ? kPlainChunks : 0;
                n_mark = n, hot_mark = hot_count;
            } else if (n > kChunk) {
                count_slots(buf, n, t.slots, t.ways), n = 0;
            }
        }
    }
    for (; done < pairs; done += 2) count_two(pair + done, joint);
    if (joint) {
        pairs = make_pairs(buf, n, t, pair);
        for (done = 0; done < pairs; done += 2) count_two(pair + done, joint);
    }
    count_slots(buf, n, t.slots, t.ways);
    t.ways[hot_slot] += hot_count;
    if (ahead_or_null) *ahead_or_null = ahead;
}
#endif

// The slot of ±0.0: the hot slot of the AVX-512 path.
i64 zero_slot(const Pow2Counter& g) { return std::min(std::max<i64>(1 - g.j0, 0), g.bins + 1); }

// float32 binning is exact for non-double inputs when 2**−e is a normal float32, every integer within a
// bin of the window is exact in float32, and so are the slots up to bins + 2.
bool float32_grid(DType dt, int e, i64 j0, i64 bins) {
    const i64 exact = i64(1) << 24;
    return dt != DType::f64 && e >= -126 && e <= 126 && std::llabs(j0) + bins <= exact && bins + 2 <= exact;
}

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
