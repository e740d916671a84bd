// The pair counter of the power-of-two histogram (see histogram_pow2.cpp for the scheme), shared by
// histogram_pow2.cpp and the fused channel reduction (reduce.cpp), which feeds it a block's values
// during its own first read instead of reading the block again.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.hpp"
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
namespace pow2 {

constexpr int kWays = 8;
constexpr i64 kChunk = 512;             // elements per slot buffer (2 KiB of int32, in L1)
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

inline i64 joint_words(i64 slots) { return slots <= kMaxPairSlots ? (slots * slots + 1) / 2 : 0; }

inline Table layout(i64* table, i64 bins) {
    const i64 s = bins + 3;
    u32* joint = joint_words(s) ? reinterpret_cast<u32*>(table + 1 + kWays * s) : nullptr;
    return {table, table + 1, joint, s};
}

LS_INLINE void count_slots(const std::int32_t* slot, i64 len, i64 stride, i64* counts) {
    i64 i = 0;
    for (; i + kWays <= len; i += kWays)
        for (int k = 0; k < kWays; ++k) ++counts[k * stride + slot[i + k]];
    for (; i < len; ++i) ++counts[slot[i]];
}

// Adds the joint table into the sub-histograms and clears it (histogram_pow2.cpp).
void flush_joint(const Table& t);

// The slot of ±0.0: the hot slot of the AVX-512 path.
inline i64 zero_slot(const Pow2Counter& g) { return std::min(std::max<i64>(1 - g.j0, 0), g.bins + 1); }

// float32 binning is exact for non-double inputs when 2**−e is a normal float32, every integer within a
// bin of the window is exact in float32, and so are the slots up to bins + 2.
inline bool float32_grid(DType dt, int e, i64 j0, i64 bins) {
    const i64 exact = i64(1) << 24;
    return dt != DType::f64 && e >= -126 && e <= 126 && std::llabs(j0) + bins <= exact && bins + 2 <= exact;
}

#ifdef LS_POW2_AVX512
bool has_avx512();  // AVX-512 F and DQ and POPCNT on this CPU (checked once)

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
struct PairBuffers {
    alignas(64) std::int32_t buf[kChunk + 48];         // + one vector of slots, + room for make_pairs' move
    alignas(64) std::int32_t pair[(kChunk + 16) / 2];  // pair indices of the last buffer
};

// The counting state of one pass: pair_push() takes 16 values at a time (valid: the lanes that are
// values; whole: all 16 are), pair_finish() counts what is left. Scalars only, passed by reference to
// always-inlined functions: they stay in registers in the caller's loop. (A class holding them with the
// grid's vectors and the table stayed in memory: the table's may_alias increments may write anything
// whose address is taken, so every member was loaded again after each increment.)
struct PairState {
    i64 n = 0, hot_count = 0, pairs = 0, done = 0;  // done: pairs counted so far
    i64 n_mark = 0, hot_mark = 0;  // n and hot_count after the last chunk's pairs were made
    int plain = 0;                 // chunks left to run without the hot-slot split
};

// The grid's constants for slots16, and the hot slot (see histogram_pow2.cpp).
struct PairGrid {
    Slots16 s16;
    __m512i hot;
    i64 hot_slot;
};

LS_AVX512 LS_INLINE PairGrid pair_grid(const Grid<float>& g, i64 hot_slot) {
    return {{_mm512_set1_ps(g.scale), _mm512_set1_ps(g.base), _mm512_set1_ps(g.base + g.nb + 1),
             _mm512_set1_epi32(static_cast<int>(g.base)), _mm512_set1_epi32(static_cast<int>(g.nb) + 2)},
            _mm512_set1_epi32(static_cast<int>(hot_slot)), hot_slot};
}

LS_AVX512 LS_INLINE void pair_push(__m512 v, __mmask16 valid, bool whole, const PairGrid& g, const Table& t,
                                   PairBuffers& b, PairState& st) {
    const __m512i s = slots16(v, g.s16);
    if (st.plain && whole) {  // few hot values lately: all 16 slots go to pairs, no compare/compress
        _mm512_storeu_si512(b.buf + st.n, s);
        st.n += 16;
    } else {
        const __mmask16 keep = _mm512_mask_cmpneq_epi32_mask(valid, s, g.hot);
        st.hot_count += _mm_popcnt_u32(valid ^ keep);
        _mm512_storeu_si512(b.buf + st.n, _mm512_maskz_compress_epi32(keep, s));
        st.n += _mm_popcnt_u32(keep);
    }
    u32* joint = t.joint;
    if (st.done < st.pairs) {  // pairs − done is a multiple of 8
        count_two(b.pair + st.done, joint), count_two(b.pair + st.done + 2, joint);
        count_two(b.pair + st.done + 4, joint), count_two(b.pair + st.done + 6, joint);
        st.done += 8;
    }
    if (st.n > kChunk && joint) {
        for (; st.done < st.pairs; st.done += 2) count_two(b.pair + st.done, joint);
        // Split off the hot slot only where it pays: when under 1/8 of the values of a chunk counted with
        // the split were hot, the next kPlainChunks chunks count every slot in pairs (a (hot, hot) pair,
        // under 1/64 of them, rarely serialises on its counter), then one chunk measures again. Counts
        // are the same either way.
        const i64 hot_new = st.hot_count - st.hot_mark, values = st.n - st.n_mark + hot_new;
        st.pairs = make_pairs(b.buf, st.n, t, b.pair), st.done = 0;
        if (st.plain) --st.plain;
        else st.plain = hot_new * 8 < values ? kPlainChunks : 0;
        st.n_mark = st.n, st.hot_mark = st.hot_count;
    } else if (st.n > kChunk) {
        count_slots(b.buf, st.n, t.slots, t.ways), st.n = 0;
    }
}

LS_AVX512 LS_INLINE void pair_finish(const PairGrid& g, const Table& t, PairBuffers& b, PairState& st) {
    u32* joint = t.joint;
    for (; st.done < st.pairs; st.done += 2) count_two(b.pair + st.done, joint);
    if (joint) {
        st.pairs = make_pairs(b.buf, st.n, t, b.pair);
        for (st.done = 0; st.done < st.pairs; st.done += 2) count_two(b.pair + st.done, joint);
    }
    count_slots(b.buf, st.n, t.slots, t.ways);
    t.ways[g.hot_slot] += st.hot_count;
    st = PairState();
}
#endif

}  // namespace pow2
}  // namespace ls
