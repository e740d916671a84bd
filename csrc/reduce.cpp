// Fused per-channel reduction in one read of the activation.
//
// The data is cut into blocks of a few thousand elements, each reduced while it sits in cache
// (reduce_blocks.hpp): pass 1 gives the sums of the runs, min, max, zero count and the first two
// threshold counts (any further thresholds follow in their own sweeps), and Σd and Σd² of d = x − m̃ for
// a shift m̃ taken from a few of the block's values, hence the block's mean m̃ + Σd/n and
// M2 = Σd² − (Σd)²/n. When m̃ lies over a standard deviation from the block's mean (cancellation would
// cost accuracy; for a channels-last tile, from any of its channels' means), pass 2 sums d around the
// mean estimate of pass 1 instead.
// Channels-first float32 runs of a multiple of 16 values also count the fused histogram in pass 1.
// Partial sums are kept in the compute type (float32 for float32 and half inputs) for at most 16 values
// per lane and then added
// into float64, so a float32 partial never sums more than 16 terms (relative error ≤ 16·2⁻²⁴ of the sum
// of magnitudes) while the hot loop runs at float32 width. Block results are folded with Chan, Golub &
// LeVeque's pairwise update ("Updating formulae and a pairwise algorithm for computing sample
// variances", 1979) in float64, means kept as m̃ + offset. A block whose pass-1 sum is not finite holds
// a NaN or an Inf (or values near the float limit), and one whose Σd² overflows the compute type holds
// values past ~1e19 (float32): it is redone with masks in float64, so that moments, extremes and
// threshold counts are over finite values only (the ChannelStats contract).
//
// Work is cut into units (runs of positions of one channel, or blocks of channels-last rows); units
// are dealt out to a fixed number of groups, groups to threads dynamically (a thread that loses its
// core to another process does not hold up the others), and groups are merged in group order, so a
// result does not depend on the scheduling.
#include "reduce.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "reduce_blocks.hpp"

namespace ls {
namespace {

constexpr int kUnitsPerThread = 8;            // units of work wanted per thread (load balance)
constexpr int kGroupsPerThread = 4;           // accumulator groups per thread, dealt out dynamically
constexpr i64 kMaxGroupCells = i64(1) << 20;  // (group, channel) accumulators kept at most
// Channels first, runs of at most kShortRun values are read in boxes (run_box). Measured on [64, C, S]
// float32, one thread, with short_runs_fast either way: S = 16 reads at 0.48 ns/value in boxes against
// 0.67 channel by channel, S = 4 at 1.6 against 2.6; S = 3 is 8 % slower in boxes, S = 32 alike, and
// S = 49 and 64 are 10 % slower. Boxes of fewer samples (a Chan merge per 256 values of a channel) are
// slower still: the per-channel work of runs() outweighs the in-order reads.
constexpr i64 kShortRun = 32;
constexpr i64 kBoxRunValues = 4096;  // values of one channel per box (one Chan merge per box)
constexpr i64 kBoxBytes = 32 << 10;  // input bytes per box: it stays in L1 for both passes

// ---- per-group channel accumulators (structure of arrays over channels [c0, c0 + c)) ----------------

struct ChannelAcc {
    i64 c0 = 0, c = 0;
    int num_thr = 0;
    // count: float64 while accumulating; mean = ref + rel. Arrays of c channels in two allocations
    // (ten per group and call were a measurable part of a call on a small input).
    double *count = nullptr, *ref = nullptr, *rel = nullptr, *m2 = nullptr, *min = nullptr, *max = nullptr;
    i64 *zeros = nullptr, *nan = nullptr, *inf = nullptr, *above = nullptr;  // above: [T, c]
    std::vector<double> reals;
    std::vector<i64> ints;
    std::vector<i64> table;  // the fused histogram's counts (Pow2Counter table)

    void init(i64 first, i64 channels, int thresholds) {
        c0 = first, c = channels, num_thr = thresholds;
        reals.assign(static_cast<std::size_t>(6 * c), 0.0);
        ints.assign(static_cast<std::size_t>((3 + num_thr) * c), 0);
        count = reals.data(), ref = count + c, rel = ref + c, m2 = rel + c, min = m2 + c, max = min + c;
        std::fill_n(min, c, std::numeric_limits<double>::infinity());
        std::fill_n(max, c, -std::numeric_limits<double>::infinity());
        zeros = ints.data(), nan = zeros + c, inf = nan + c, above = inf + c;
    }

    bool holds(i64 ch) const { return ch >= c0 && ch < c0 + c; }

    void add(i64 ch, const Partial& p, const i64* above_p, i64 above_stride) {
        const i64 i = ch - c0;
        chan_merge(count[i], ref[i], rel[i], m2[i], static_cast<double>(p.n), p.ref, p.rel, p.m2);
        min[i] = std::min(min[i], p.min);
        max[i] = std::max(max[i], p.max);
        zeros[i] += p.zeros, nan[i] += p.nan, inf[i] += p.inf;
        for (int t = 0; t < num_thr; ++t) above[t * c + i] += above_p[t * above_stride];
    }

    // A finite tile block of channels [ch, ch + width): rows values in each.
    template <class E>
    void add_tile(i64 ch, const TileScratch<E>& ts, i64 rows, i64 width) {
        const i64 i = ch - c0;
        merge_tile(ts, static_cast<double>(rows), width, num_thr, &count[i], &ref[i], &rel[i], &m2[i], &min[i], &max[i],
                   &zeros[i], above + i, c);
    }
};

// out[i] = sum[i] / d: the sample means of a block (the division of put_sample, in vectors; a
// baseline build divides two doubles at a time, which for [8, 32, 1024] was a tenth of the call).
LS_CLONES void divide(double* out, const double* sum, double d, i64 n) {
#pragma omp simd
    for (i64 i = 0; i < n; ++i) out[i] = sum[i] / d;
}

// Folds group g's channels [c0, c1) into the running per-channel results (n, ref, rel, m2, min, max and
// the counts): chan_merge's update written with selects, so that it vectorises; bitwise chan_merge.
LS_CLONES void merge_group(const ChannelAcc& g, i64 c0, i64 c1, double* n_, double* ref_, double* rel_,
                           double* m2_, double* mn, double* mx, i64* z, i64* na, i64* in) {
    const i64 k = g.c0;
    const double *gc = g.count, *gref = g.ref, *grel = g.rel, *gm2 = g.m2, *gmin = g.min, *gmax = g.max;
    const i64 *gz = g.zeros, *gnan = g.nan, *ginf = g.inf;
#pragma omp simd
    for (i64 ch = c0; ch < c1; ++ch) {
        const i64 i = ch - k;
        const double n = n_[ch], nb = gc[i], total = n + nb, w_b = nb / total;
        const double delta = (gref[i] - ref_[ch]) + (grel[i] - rel_[ch]);
        const double rel_m = rel_[ch] + delta * w_b, m2_m = m2_[ch] + (gm2[i] + delta * delta * n * w_b);
        const bool skip = nb == 0, first = n == 0;
        ref_[ch] = skip || !first ? ref_[ch] : gref[i];
        rel_[ch] = skip ? rel_[ch] : first ? grel[i] : rel_m;
        m2_[ch] = skip ? m2_[ch] : first ? gm2[i] : m2_m;
        n_[ch] = skip ? n : total;
        mn[ch] = gmin[i] < mn[ch] ? gmin[i] : mn[ch];  // std::min, std::max
        mx[ch] = mx[ch] < gmax[i] ? gmax[i] : mx[ch];
        z[ch] += gz[i], na[ch] += gnan[i], in[ch] += ginf[i];
    }
}

// ---- the plan: units of work, their groups, and the loops over them ----------------------------------

template <class In>
class Reducer {
    using E = acc_t<In>;

public:
    Reducer(const Strided3& x, const double* thr, int num_thr, int threads, const Pow2Counter* hist)
        : x_(x), in_(static_cast<const In*>(x.data)), num_thr_(num_thr), threads_(threads), thr_(num_thr),
          hist_(hist) {
#ifdef LS_POW2_AVX512
        pair_count_ = hist && pow2::has_avx512() && pow2::float32_grid(DType::f32, hist->e, hist->j0, hist->bins);
#endif
        for (int t = 0; t < num_thr; ++t) thr_[t] = round_down<E>(thr[t]);
        channels_last_ = x.s == 1 || (x.c != 1 && std::llabs(x.sc) < std::llabs(x.ss));
        if (channels_last_) plan_rows();
        else plan_channels();
        groups_ = std::max<i64>(1, std::min<i64>(units_, static_cast<i64>(threads) * kGroupsPerThread));
        // channels last, cut into a group of channels per thread or more (too few samples to share out):
        // a group per channel group, so that each channel is folded from one group (the same groups for
        // any thread count that cuts the channels alike)
        if (channels_last_ && channel_groups_ >= threads) groups_ = channel_groups_;
        if (channels_last_ && channel_groups_ == 1)  // each group holds every channel: bound the memory
            groups_ = std::max<i64>(1, std::min(groups_, kMaxGroupCells / std::max<i64>(x.c, 1)));
    }

    void run(const ReduceOut& out, i64* hist_counts) {
        std::vector<ChannelAcc> acc(groups_);
        out_ = &out;
        if (x_.s == 0) std::fill_n(out.sample_mean, x_.n * x_.c, std::numeric_limits<double>::quiet_NaN());
        if (chunks_ > 1) {
            sample_sum_.assign(static_cast<std::size_t>(parts_) * x_.n * x_.c, 0.0);
            sample_cnt_.assign(sample_sum_.size(), 0);
        }
        // count, ref, rel per channel while the groups are folded
        const std::unique_ptr<double[]> state(new double[static_cast<std::size_t>(3 * x_.c)]);
        FirstError error;
        // no more threads than groups, and none started for one: each start wakes a sleeping thread
        const int team = static_cast<int>(std::min<i64>(threads_, groups_));
#pragma omp parallel num_threads(team) if (team > 1)
        {
            Scratch* scratch = nullptr;
            error.run([&] { scratch = &thread_scratch(*this); });
#pragma omp for schedule(dynamic, 1)
            for (i64 g = 0; g < groups_; ++g) {
                if (!scratch) continue;
                error.run([&] {
                    if (hist_) acc[g].table.assign(static_cast<std::size_t>(pow2_table_size(hist_->bins)), 0);
                    i64 u0, u1;
                    split_range(units_, static_cast<int>(groups_), static_cast<int>(g), u0, u1);
                    if (channels_last_) run_rows(acc[g], *scratch, u0, u1);
                    else run_channels(acc[g], *scratch, u0, u1);
                });
            }
            // after the loop's barrier every thread sees the same error state: all fold, or none
            if (!error.failed()) finish(acc, out, state.get());
        }
        error.rethrow();
        if (hist_)
            for (const ChannelAcc& a : acc)
                if (!a.table.empty()) pow2_fold(a.table.data(), hist_->bins, hist_counts);
    }

private:
    const Strided3 x_;
    const In* in_;
    int num_thr_, threads_;
    std::vector<E> thr_;
    const Pow2Counter* hist_;  // the fused histogram's grid, or null
    bool pair_count_ = false;  // float32 runs may count into it during pass 1 (runs_fast_counted)
    bool channels_last_ = false;
    i64 units_ = 0, groups_ = 1;
    i64 chunks_ = 1, chunk_len_ = 1;  // pieces of one (sample, channel) run, for parallelism
    i64 parts_ = 1;                   // chunked: blocks per run, their sums kept apart (see put_sample)
    i64 samples_per_block_ = 0;       // short runs / short S: whole samples per block (0: off)
    i64 box_channels_ = 0;            // channels first, short runs: channels per box (0: off)
    i64 box_blocks_ = 1;              // boxes along the batch, per block of box_channels_ channels
    i64 gather_len_ = 0;              // values of a box copied contiguous before its passes (0: none)
    i64 tile_ = 1, rows_ = 1;         // channels last: channels per tile, positions per block
    i64 channel_groups_ = 1, channel_group_len_ = 0;
    const ReduceOut* out_ = nullptr;
    std::vector<double> sample_sum_;  // [parts, N, C], only when a run is cut into chunks
    std::vector<i64> sample_cnt_;

    struct Scratch {
        std::vector<E> values;
        std::vector<i64> above;
        TileScratch<E> tile;
        std::vector<double> unit_sum;  // channels last: per-channel sums of one sample's chunk
        std::vector<i64> unit_cnt;
        std::vector<double> row_sums;  // channels first: per-run sums and finite counts
        std::vector<i64> row_counts;
        std::vector<double> box_sums;  // short runs: per-run sums of a box, [channel][sample]
        std::vector<i64> box_counts;
        std::vector<In> gathered;      // a box of short runs, copied contiguous (see plan_channels)
        LineAhead ahead;               // the next unit's lines, fetched while the histogram counts this one
        // Sized for r's plan. Every buffer is written before it is read (a thread's scratch serves unit
        // after unit), so a scratch kept from an earlier call serves as well as a new one.
        void prepare(const Reducer& r) {
            values.resize(r.copies() ? static_cast<std::size_t>(std::max(2 * kBlock, r.rows_ * r.tile_)) : 0);
            above.resize(static_cast<std::size_t>(r.num_thr_));
            tile.resize(r.tile_, r.num_thr_);
            unit_sum.resize(static_cast<std::size_t>(r.channel_group_len_));
            unit_cnt.resize(unit_sum.size());
            row_sums.resize(static_cast<std::size_t>(std::max<i64>(r.samples_per_block_, 1)));
            row_counts.resize(row_sums.size());
            box_sums.resize(static_cast<std::size_t>(r.box_channels_ * r.samples_per_block_));
            box_counts.resize(box_sums.size());
            gathered.resize(static_cast<std::size_t>(r.gather_len_));
            ahead.clear();
        }
    };

    // The calling thread's scratch, kept from call to call: a new one per thread and call was some
    // twenty-five allocations (a third of a call on a small input went to malloc and free). What it keeps
    // is bounded by the plan's tile and channel group, never by the batch: O(tile + channels) per thread.
    static Scratch& thread_scratch(const Reducer& r) {
        static thread_local Scratch kept;
        kept.prepare(r);
        return kept;
    }

    // Whether load_runs / load_tile copy into Scratch::values (else they read the input in place and
    // the 64 KiB scratch is not allocated, nor zeroed, per thread and call).
    bool copies() const {
        return !std::is_same_v<In, E> || (channels_last_ ? x_.sc != 1 : x_.ss != 1);
    }

    static i64 ceil_div(i64 a, i64 b) { return (a + b - 1) / std::max<i64>(b, 1); }

    // channels first, units channel-major so that a group sees few channels:
    //   S ≤ kShortRun: boxes of (block of channels, block of samples), see run_box;
    //   S ≤ kBlock: (channel, block of samples), their runs reduced together;
    //   longer runs: (channel, sample, chunk of S), in blocks of kBlock positions.
    void plan_channels() {
        const i64 want = static_cast<i64>(threads_) * kUnitsPerThread, rows = x_.n * x_.c;
        if (x_.s <= kShortRun) {
            const i64 s = std::max<i64>(x_.s, 1);
            samples_per_block_ = std::min(std::max<i64>(x_.n, 1), ceil_div(kBoxRunValues, s));
            box_channels_ = std::max<i64>(1, kBoxBytes / (samples_per_block_ * s * static_cast<i64>(sizeof(In))));
            box_channels_ = std::min(box_channels_, std::max<i64>(x_.c, 1));
            box_blocks_ = ceil_div(x_.n, samples_per_block_);
            units_ = ceil_div(x_.c, box_channels_) * box_blocks_;
            // A box of a slab per sample is copied contiguous before its passes (Scratch::gathered): its
            // samples lie C·S apart, a whole number of pages for the usual shapes, so they all fell into
            // the same few L1 sets and every pass after the first read them again from L2 ([64, 512, 16]:
            // −16% time on one thread). Units of longer runs measured slower with a copy.
            if (std::is_same_v<In, E> && x_.ss == 1 && x_.sc == x_.s && x_.n > 1)
                gather_len_ = samples_per_block_ * box_channels_ * s;
            return;
        }
        if (x_.s <= kBlock) {
            samples_per_block_ = std::max<i64>(1, kBlock / std::max<i64>(x_.s, 1));
            units_ = x_.c * ceil_div(x_.n, samples_per_block_);
            return;
        }
        if (rows < want) chunks_ = std::min(ceil_div(want, rows), ceil_div(x_.s, kBlock));
        align_chunks(kBlock);
        units_ = rows * chunks_;
    }

    // channels last: units (channel group, sample, chunk) or (channel group, block of whole samples)
    void plan_rows() {
        const i64 want = static_cast<i64>(threads_) * kUnitsPerThread;
        tile_ = std::max<i64>(1, std::min(x_.c, kTile));
        rows_ = std::max<i64>(1, kTileBlock / tile_);
        if (x_.s < rows_) {  // short S (e.g. [N, 1, C] from a Linear layer): blocks of whole samples
            // rows evenly spaced across samples: S = 1 (a sample is one row, at stride sn), or S·ss == sn
            const bool uniform = x_.s == 1 || x_.sn == x_.s * x_.ss;
            samples_per_block_ = uniform ? std::max<i64>(1, rows_ / std::max<i64>(x_.s, 1)) : 1;
            units_ = ceil_div(x_.n, samples_per_block_);
        } else {
            if (x_.n < want) chunks_ = std::min(ceil_div(want, x_.n), ceil_div(x_.s, rows_));
            align_chunks(rows_);
            units_ = x_.n * chunks_;
        }
        const i64 tiles = ceil_div(x_.c, tile_);
        if (units_ < want && tiles > 1) channel_groups_ = std::min(tiles, ceil_div(want, units_));
        channel_group_len_ = ceil_div(tiles, channel_groups_) * tile_;
        // as many groups as that length needs: with 5 tiles in 4 groups of 2, a fourth group would start
        // past the last channel (and its accumulators had a negative size)
        channel_groups_ = ceil_div(x_.c, channel_group_len_);
        units_ *= channel_groups_;
    }

    // Chunks start at multiples of the block length, and a chunked run keeps the sum of each block: a
    // sample's sum is then the same sequence of additions (block by block, from position 0) however
    // many chunks the batch size and thread count asked for.
    void align_chunks(i64 block) {
        chunk_len_ = ceil_div(ceil_div(x_.s, chunks_), block) * block;
        chunks_ = ceil_div(x_.s, chunk_len_);
        parts_ = chunks_ > 1 ? ceil_div(x_.s, block) : 1;
    }

    // -- channels first --
    void run_channels(ChannelAcc& acc, Scratch& sc, i64 u0, i64 u1) {
        if (u0 >= u1) return;
        if (box_channels_) {
            const i64 first = u0 / box_blocks_ * box_channels_;
            acc.init(first, std::min(x_.c, ((u1 - 1) / box_blocks_ + 1) * box_channels_) - first, num_thr_);
            for (i64 u = u0; u < u1; ++u) {
                aim(sc, u + 1, u1);
                run_box(acc, sc, u / box_blocks_ * box_channels_, u % box_blocks_);
            }
            return;
        }
        const i64 per_channel = units_ / std::max<i64>(x_.c, 1);
        acc.init(u0 / per_channel, (u1 - 1) / per_channel - u0 / per_channel + 1, num_thr_);
        for (i64 u = u0; u < u1; ++u) {
            aim(sc, u + 1, u1);
            const i64 ch = u / per_channel, rest = u % per_channel;
            if (samples_per_block_) {
                const i64 n0 = rest * samples_per_block_, n1 = std::min(x_.n, n0 + samples_per_block_);
                const In* first = in_ + n0 * x_.sn + ch * x_.sc;
                runs(acc, sc, ch, first, n1 - n0, x_.sn, x_.s);
                for (i64 n = n0; n < n1; ++n) put_sample(0, n, ch, sc.row_sums[n - n0], sc.row_counts[n - n0]);
            } else {
                long_run(acc, sc, ch, rest / chunks_, rest % chunks_);
            }
        }
    }

    // Points sc.ahead at the first block of channels-first unit u (nothing when u is past u1 or the
    // positions are not contiguous): runs() and long_run() fetch it during pass 1 (without the histogram,
    // or when pass 1 counts it) or while the histogram counts.
    void aim(Scratch& sc, i64 u, i64 u1) {
        sc.ahead.clear();
        if (u >= u1 || x_.ss != 1 || x_.s == 0) return;
        const i64 size = static_cast<i64>(sizeof(In));
        if (box_channels_) {
            const i64 c0 = u / box_blocks_ * box_channels_, n0 = u % box_blocks_ * samples_per_block_;
            const i64 c1 = std::min(x_.c, c0 + box_channels_), n1 = std::min(x_.n, n0 + samples_per_block_);
            if (x_.sc == x_.s)
                sc.ahead.set(in_ + n0 * x_.sn + c0 * x_.sc, n1 - n0, x_.sn * size, (c1 - c0) * x_.s * size);
            return;
        }
        const i64 per_channel = units_ / std::max<i64>(x_.c, 1), ch = u / per_channel, rest = u % per_channel;
        if (samples_per_block_) {
            const i64 n0 = rest * samples_per_block_, n1 = std::min(x_.n, n0 + samples_per_block_);
            sc.ahead.set(in_ + n0 * x_.sn + ch * x_.sc, n1 - n0, x_.sn * size, x_.s * size);
        } else {
            const i64 s0 = rest % chunks_ * chunk_len_;
            sc.ahead.set(in_ + rest / chunks_ * x_.sn + ch * x_.sc + s0, 1, 0, std::min(kBlock, x_.s - s0) * size);
        }
    }

    // rows runs of len positions of channel ch (run r at first + r·stride), folded into acc; their
    // sums and finite counts land in sc.row_sums / sc.row_counts. count: the fused histogram counts them
    // (else the caller counts them with others).
    void runs(ChannelAcc& acc, Scratch& sc, i64 ch, const In* first, i64 rows, i64 stride, i64 len,
              bool count = true) {
        if (rows == 0 || len == 0) {
            std::fill_n(sc.row_sums.data(), rows, 0.0), std::fill_n(sc.row_counts.data(), rows, 0);
            return;
        }
        i64 ld = stride;
        const E* v = load_runs(first, rows, stride, len, sc.values.data(), ld);
        std::fill(sc.above.begin(), sc.above.end(), 0);
        Partial p;
        bool fast;
        // pass 1 fetches the next unit when no separate histogram count will (see aim)
        LineAhead none;
        LineAhead& ahead = hist_ ? none : sc.ahead;
        double* sums = sc.row_sums.data();
        bool counted = false;  // the histogram counted them during pass 1
        if constexpr (std::is_same_v<E, float>) {  // runs of one vector: the loop over runs
#ifdef LS_POW2_AVX512
            counted = count && pair_count_ && len % kLanes == 0;
            if (counted)
                fast = runs_fast_counted(v, rows, ld, len, thr_.data(), num_thr_, p, sc.above.data(), sums, sc.ahead,
                                         *hist_, acc.table.data());
            else
#endif
            fast = len <= kShortLen
                       ? short_runs_fast(v, rows, ld, len, thr_.data(), num_thr_, p, sc.above.data(), sums, ahead)
                       : runs_fast(v, rows, ld, len, thr_.data(), num_thr_, p, sc.above.data(), sums, ahead);
        } else {
            fast = runs_fast(v, rows, ld, len, thr_.data(), num_thr_, p, sc.above.data(), sums, ahead);
        }
        if (fast) {
            std::fill_n(sc.row_counts.data(), rows, len);
        } else {
            for (i64 r = 0; r < rows; ++r) {  // masked, run by run
                Partial q;
                run_masked(v + r * ld, len, 1, thr_.data(), num_thr_, q, sc.above.data());
                run_sum(v + r * ld, len, sc.row_sums[r], sc.row_counts[r]);  // = the fast path's sum
                double n = static_cast<double>(p.n);
                chan_merge(n, p.ref, p.rel, p.m2, static_cast<double>(q.n), q.ref, q.rel, q.m2);
                p.n = static_cast<i64>(n), p.zeros += q.zeros, p.nan += q.nan, p.inf += q.inf;
                p.min = std::min(p.min, q.min), p.max = std::max(p.max, q.max);
            }
        }
        acc.add(ch, p, sc.above.data(), 1);
        if (!hist_ || !count || counted) return;
        if constexpr (std::is_same_v<E, float>) pow2_count(v, rows, ld, len, *hist_, acc.table.data(), &sc.ahead);
        else pow2_count(v, rows, ld, len, *hist_, acc.table.data());
    }

    // A box: channels [c0, c0 + box_channels_) of samples [n0, n0 + samples_per_block_), short runs.
    // Read channel by channel, its runs lie C·S apart: short strided runs that the hardware prefetchers
    // do not follow and that alias to few L1 sets. The box is first touched in memory order (per
    // sample, one contiguous slab of channels when the channel stride is S), so that both passes of each
    // channel read it from L1; each channel's runs are then reduced together (one Chan merge per
    // channel and box) with the run sums of runs_pass1, and the sample means are stored sample by
    // sample, contiguous in C.
    void run_box(ChannelAcc& acc, Scratch& sc, i64 c0, i64 b) {
        const i64 n0 = b * samples_per_block_, n1 = std::min(x_.n, n0 + samples_per_block_);
        const i64 c1 = std::min(x_.c, c0 + box_channels_), rows = n1 - n0;
        if (x_.s == 0 || rows == 0) return;  // sample_mean is NaN already
        const bool slab = x_.ss == 1 && x_.sc == x_.s;
        for (i64 n = n0; n < n1; ++n) {
            const In* base = in_ + n * x_.sn + c0 * x_.sc;
            if (slab) {
                touch(base, (c1 - c0) * x_.s);
            } else if (x_.ss == 1) {
                for (i64 c = 0; c < c1 - c0; ++c) touch(base + c * x_.sc, x_.s);
            }
        }
        const i64 width = (c1 - c0) * x_.s;
        const In* box = in_ + n0 * x_.sn + c0 * x_.sc;
        i64 box_ld = x_.sn;
        if (gather_len_) {
            In* dst = sc.gathered.data();
            for (i64 n = n0; n < n1; ++n) std::copy_n(in_ + n * x_.sn + c0 * x_.sc, width, dst + (n - n0) * width);
            box = dst, box_ld = width;
        }
        // the histogram counts the box in one call, slab by slab (a call per channel, of runs of 16
        // values, cost a fifth more)
        const bool box_count = hist_ && slab && std::is_same_v<In, E>;
        for (i64 c = c0; c < c1; ++c) {
            runs(acc, sc, c, box + (c - c0) * x_.sc, rows, box_ld, x_.s, !box_count);
            std::copy_n(sc.row_sums.data(), rows, sc.box_sums.data() + (c - c0) * samples_per_block_);
            std::copy_n(sc.row_counts.data(), rows, sc.box_counts.data() + (c - c0) * samples_per_block_);
        }
        if (box_count) {
            if constexpr (std::is_same_v<In, float>) pow2_count(box, rows, box_ld, width, *hist_, acc.table.data(), &sc.ahead);
            else if constexpr (std::is_same_v<In, double>) pow2_count(box, rows, box_ld, width, *hist_, acc.table.data());
        }
        for (i64 r = 0; r < rows; ++r)
            for (i64 c = c0; c < c1; ++c) {
                const std::size_t at = static_cast<std::size_t>((c - c0) * samples_per_block_ + r);
                put_sample(0, n0 + r, c, sc.box_sums[at], sc.box_counts[at]);
            }
    }

    // Prefetches the cache lines of len contiguous values into L1, in order.
    static void touch(const In* p, i64 len) {
        const char* b = reinterpret_cast<const char*>(p);
        const char* e = reinterpret_cast<const char*>(p + len);
        for (const char* q = reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(b) & ~std::uintptr_t(63));
             q < e; q += 64)
            __builtin_prefetch(q, 0, 3);
    }

    // Compute-type values of the runs: the input itself when it is, with unit stride; else a copy.
    const E* load_runs(const In* first, i64 rows, i64 stride, i64 len, E* scratch, i64& ld) {
        if constexpr (std::is_same_v<In, E>) {
            if (x_.ss == 1) return first;
        }
        for (i64 r = 0; r < rows; ++r) {
            E* dst = scratch + r * len;
            const E* src = load_run(first + r * stride, x_.ss, len, dst);
            if (src != dst) std::copy_n(src, len, dst);
        }
        ld = len;
        return scratch;
    }

    void long_run(ChannelAcc& acc, Scratch& sc, i64 ch, i64 n, i64 k) {
        const i64 s0 = k * chunk_len_, s1 = std::min(x_.s, s0 + chunk_len_);
        const In* row = in_ + n * x_.sn + ch * x_.sc;
        i64 count = 0;
        double sum = 0;
        const LineAhead next_unit = sc.ahead;  // aim's: fetched during the last block
        for (i64 b = s0; b < s1; b += kBlock) {
            if (b + kBlock >= s1) sc.ahead = next_unit;
            else if (x_.ss == 1)
                sc.ahead.set(row + b + kBlock, 1, 0, std::min(kBlock, s1 - b - kBlock) * i64(sizeof(In)));
            runs(acc, sc, ch, row + b * x_.ss, 1, 0, std::min(kBlock, s1 - b));
            if (chunks_ > 1) put_sample(b / kBlock, n, ch, sc.row_sums[0], sc.row_counts[0]);
            count += sc.row_counts[0], sum += sc.row_sums[0];
        }
        if (chunks_ == 1) put_sample(0, n, ch, sum, count);
    }

    // The sum and count of the finite values of sample n, channel ch (block k of its run when chunked).
    void put_sample(i64 k, i64 n, i64 ch, double sum, i64 count) {
        const std::size_t at = (static_cast<std::size_t>(k) * x_.n + n) * x_.c + ch;
        if (chunks_ > 1) {
            sample_sum_[at] = sum, sample_cnt_[at] = count;
        } else {
            out_->sample_mean[at] = count ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
        }
    }

    // -- channels last: rows of C channels per (sample, position) --
    void run_rows(ChannelAcc& acc, Scratch& sc, i64 u0, i64 u1) {
        if (u0 >= u1) return;
        const i64 per_group = units_ / channel_groups_;
        const i64 cg0 = u0 / per_group, cg1 = (u1 - 1) / per_group;
        const i64 c_first = cg0 * channel_group_len_;
        acc.init(c_first, std::min(x_.c, (cg1 + 1) * channel_group_len_) - c_first, num_thr_);
        for (i64 u = u0; u < u1; ++u) {
            const i64 cg = u / per_group, rest = u % per_group;
            const i64 c0 = cg * channel_group_len_, c1 = std::min(x_.c, c0 + channel_group_len_);
            if (samples_per_block_) {
                const i64 n0 = rest * samples_per_block_, n1 = std::min(x_.n, n0 + samples_per_block_);
                if (x_.s == 0) continue;
                for (i64 c = c0; c < c1; c += tile_)
                    block(acc, sc, in_ + n0 * x_.sn, (n1 - n0) * x_.s, c, std::min(tile_, c1 - c), n0, -1);
            } else {
                const i64 k = rest % chunks_, n = rest / chunks_;
                const i64 s0 = k * chunk_len_, s1 = std::min(x_.s, s0 + chunk_len_);
                std::fill_n(sc.unit_sum.data(), c1 - c0, 0.0);
                std::fill_n(sc.unit_cnt.data(), c1 - c0, 0);
                for (i64 b = s0; b < s1; b += rows_) {
                    const In* base = in_ + n * x_.sn + b * x_.ss;
                    for (i64 c = c0; c < c1; c += tile_)
                        block(acc, sc, base, std::min(rows_, s1 - b), c, std::min(tile_, c1 - c), n, c - c0);
                    if (chunks_ == 1) continue;  // else each block's sums are kept apart (align_chunks)
                    for (i64 c = c0; c < c1; ++c) put_sample(b / rows_, n, c, sc.unit_sum[c - c0], sc.unit_cnt[c - c0]);
                    std::fill_n(sc.unit_sum.data(), c1 - c0, 0.0);
                    std::fill_n(sc.unit_cnt.data(), c1 - c0, 0);
                }
                if (chunks_ > 1) continue;
                for (i64 c = c0; c < c1; ++c) put_sample(0, n, c, sc.unit_sum[c - c0], sc.unit_cnt[c - c0]);
            }
        }
    }

    // One block: rows × width values from base (+ channel c0). With unit_at ≥ 0 the rows are positions
    // of sample n and their sums go to the unit's sample sums at unit_at; otherwise they are whole
    // samples n, n+1, … of S rows each.
    void block(ChannelAcc& acc, Scratch& sc, const In* base, i64 rows, i64 c0, i64 width, i64 n, i64 unit_at) {
        i64 ld = 0;
        const i64 row_stride = unit_at < 0 && x_.s == 1 ? x_.sn : x_.ss;  // whole samples of one row each
        const E* v = load_tile(base + c0 * x_.sc, rows, row_stride, width, x_.sc, sc.values.data(), ld);
        TileScratch<E>& ts = sc.tile;
        const i64 group_rows = unit_at < 0 ? x_.s : rows;
        const bool finite = tile_fast(v, rows, ld, width, group_rows, thr_.data(), num_thr_, ts);
        if (hist_) pow2_count(v, rows, ld, width, *hist_, acc.table.data());
        if (finite) {
            acc.add_tile(c0, ts, rows, width);
        } else {
            tile_masked(v, rows, ld, width, thr_.data(), num_thr_, ts);
            for (i64 w = 0; w < width; ++w) acc.add(c0 + w, ts.masked[w], ts.masked_above.data() + w * num_thr_, 1);
        }
        if (unit_at < 0 && finite) {  // sample means: Σx/S over the sample's rows (chunks_ == 1 here)
            const double s = static_cast<double>(x_.s);
            for (i64 g = 0; g < rows / x_.s; ++g) {
                double* out = out_->sample_mean + (n + g) * x_.c + c0;
                const double* gsum = ts.group_sum.data() + g * width;
                divide(out, gsum, s, width);
            }
            return;
        }
        if (unit_at < 0) {
            whole_samples(v, ld, rows, n, c0, width, sc);
            return;
        }
        for (i64 w = 0; w < width; ++w) {
            if (finite) {
                sc.unit_sum[unit_at + w] += (ts.shift[w] + ts.rel[w]) * static_cast<double>(rows);
                sc.unit_cnt[unit_at + w] += rows;
            } else {
                const Partial& m = ts.masked[w];
                sc.unit_sum[unit_at + w] += (m.ref + m.rel) * static_cast<double>(m.n);
                sc.unit_cnt[unit_at + w] += m.n;
            }
        }
    }

    // Per-sample means over the finite values of the consecutive samples n0, … in one block (in L1/L2),
    // with the additions of the finite path (tile_sum): a sample's mean does not depend on its neighbours.
    void whole_samples(const E* v, i64 ld, i64 rows, i64 n0, i64 c0, i64 width, Scratch& sc) {
        double* sum = sc.unit_sum.data();
        i64* cnt = sc.unit_cnt.data();
        for (i64 r0 = 0, n = n0; r0 < rows; r0 += x_.s, ++n) {
            tile_sum(v + r0 * ld, x_.s, ld, width, sum, cnt);
            for (i64 w = 0; w < width; ++w) put_sample(0, n, c0 + w, sum[w], cnt[w]);
        }
    }

    // The one group that holds channels [lo, hi), when no other holds any of them; else null.
    static const ChannelAcc* sole_group(const std::vector<ChannelAcc>& acc, i64 lo, i64 hi) {
        const ChannelAcc* only = nullptr;
        for (const ChannelAcc& g : acc) {
            if (g.c0 >= hi || g.c0 + g.c <= lo) continue;
            if (only || g.c0 > lo || g.c0 + g.c < hi) return nullptr;
            only = &g;
        }
        return only;
    }

    // The outputs of channels [lo, hi) from the one group that holds them: bitwise what merge_group gives
    // when folding that group into empty results (its first merge takes the group's values).
    void copy_group(const ChannelAcc& g, i64 lo, i64 hi, const ReduceOut& out) const {
        const i64 k = lo - g.c0, n = hi - lo, C = x_.c;
        for (i64 i = 0; i < n; ++i) {
            out.count[lo + i] = static_cast<i64>(g.count[k + i]);
            out.mean[lo + i] = g.ref[k + i] + g.rel[k + i];
        }
        std::copy_n(g.m2 + k, n, out.m2 + lo), std::copy_n(g.min + k, n, out.min + lo);
        std::copy_n(g.max + k, n, out.max + lo), std::copy_n(g.zeros + k, n, out.zeros + lo);
        std::copy_n(g.nan + k, n, out.nan + lo), std::copy_n(g.inf + k, n, out.inf + lo);
        for (i64 t = 0; t < num_thr_; ++t) std::copy_n(g.above + t * g.c + k, n, out.above + t * C + lo);
    }

    // -- fold the group accumulators (in group order) and the per-chunk sample sums into the outputs --
    // Group by group over the channels each holds (a group holds a contiguous range), so that no channel
    // scans every group for the ones that hold it: each channel still sees its groups' merges in group
    // order, the updates of chan_merge (merge_group). Called by every thread of the reduction's parallel
    // region (no second region to start): blocks of channels are shared out among them.
    void finish(const std::vector<ChannelAcc>& acc, const ReduceOut& out, double* state) {
        const i64 C = x_.c, N = x_.n, T = num_thr_;
        double *cnt = state, *ref = cnt + C, *rel = ref + C;
        constexpr i64 kFinishBlock = 256;  // channels per task
        const i64 blocks = ceil_div(C, kFinishBlock);
#pragma omp for schedule(static)
        for (i64 b = 0; b < blocks; ++b) {
            const i64 lo = b * kFinishBlock, hi = std::min(C, lo + kFinishBlock);
            if (const ChannelAcc* only = sole_group(acc, lo, hi)) {  // its values are the channels' results
                copy_group(*only, lo, hi, out);
                continue;
            }
            std::fill(cnt + lo, cnt + hi, 0.0), std::fill(ref + lo, ref + hi, 0.0), std::fill(rel + lo, rel + hi, 0.0);
            std::fill(out.m2 + lo, out.m2 + hi, 0.0);
            std::fill(out.min + lo, out.min + hi, std::numeric_limits<double>::infinity());
            std::fill(out.max + lo, out.max + hi, -std::numeric_limits<double>::infinity());
            std::fill(out.zeros + lo, out.zeros + hi, 0), std::fill(out.nan + lo, out.nan + hi, 0);
            std::fill(out.inf + lo, out.inf + hi, 0);
            for (i64 t = 0; t < T; ++t) std::fill(out.above + t * C + lo, out.above + t * C + hi, 0);
            for (const ChannelAcc& g : acc) {
                const i64 c0 = std::max(lo, g.c0), c1 = std::min(hi, g.c0 + g.c);
                if (c0 >= c1) continue;
                merge_group(g, c0, c1, cnt, ref, rel, out.m2, out.min, out.max, out.zeros,
                            out.nan, out.inf);
                for (i64 t = 0; t < T; ++t) {
                    const i64* ga = g.above + t * g.c;
                    i64* oa = out.above + t * C;
                    for (i64 ch = c0; ch < c1; ++ch) oa[ch] += ga[ch - g.c0];
                }
            }
            for (i64 ch = lo; ch < hi; ++ch) out.count[ch] = static_cast<i64>(cnt[ch]), out.mean[ch] = ref[ch] + rel[ch];
        }
        if (chunks_ == 1) return;  // the sample means were written by the units
#pragma omp for schedule(static)
        for (i64 i = 0; i < N * C; ++i) {
            double s = 0;
            i64 c = 0;
            for (i64 k = 0; k < parts_; ++k) s += sample_sum_[k * N * C + i], c += sample_cnt_[k * N * C + i];
            out.sample_mean[i] = c ? s / static_cast<double>(c) : std::numeric_limits<double>::quiet_NaN();
        }
    }
};

}  // namespace

void channel_reduce(const Strided3& x, const double* thresholds, int num_thresholds, const ReduceOut& out,
                    int num_threads, const Pow2Counter* hist, i64* hist_counts) {
    if (hist) check_pow2_grid(hist->e, hist->j0, hist->bins);
    dispatch(x.dtype, [&](auto tag) {
        using In = decltype(tag);
        Reducer<In>(x, thresholds, num_thresholds, clamp_threads(num_threads), hist).run(out, hist_counts);
    });
}

}  // namespace ls
