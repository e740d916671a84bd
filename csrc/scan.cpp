// Linear recurrence scan, parallel over the B·D independent lanes.
//
// When there are fewer lane tiles than threads the time axis is cut into K chunks and scanned in three
// phases (Blelloch, "Prefix sums and their applications", 1990, §1.4; the chunked form of e.g.
// Martin & Cundy, "Parallelizing linear recurrent neural nets over sequence length", ICLR 2018):
//   1. each chunk is scanned from a zero state, keeping its last state and the product of its a's;
//   2. the chunk carries are chained sequentially: H_k = (Π_chunk a) · H_{k−1} + last_k;
//   3. each chunk adds its carry-in times the running product of a: h_t += (Π_{s≤t} a_s) · H_{k−1}.
// Everything accumulates in float32 (float64 for float64 inputs); a carry of exactly 0 is not added, so
// an overflowing product never turns a zero carry into NaN.
#include "scan.hpp"

#include <algorithm>
#include <vector>

namespace ls {
namespace {

constexpr i64 kLane = 256;      // lanes (along D) per tile: the running state lives on the stack
constexpr i64 kMinChunk = 64;   // shortest time chunk worth a separate task

template <class In>
class Scan {
    using A = acc_t<In>;

public:
    Scan(i64 B, i64 T, i64 D, int threads) : B_(B), T_(T), D_(D), threads_(threads) {
        tiles_ = (D + kLane - 1) / kLane;
        const i64 lanes = B * tiles_;
        if (lanes < threads && T >= 2 * kMinChunk)
            chunks_ = std::min<i64>((2 * threads + lanes - 1) / std::max<i64>(lanes, 1), T / kMinChunk);
        chunk_len_ = (T + chunks_ - 1) / chunks_;
    }

    void forward(const In* a, const In* b, const A* h0, A* h) const {
        if (chunks_ == 1) {
            parallel_units(B_ * tiles_, [&](i64 u) {
                Tile t = tile(u, 0);
                A state[kLane];
                init_state(state, t, h0);
                forward_run<false>(a, b, h, t, state, nullptr);
            });
            return;
        }
        const std::size_t carry_size = static_cast<std::size_t>(chunks_) * B_ * D_;
        std::vector<A> last(carry_size), prod(carry_size);
        parallel_units(B_ * tiles_ * chunks_, [&](i64 u) {  // phase 1
            Tile t = tile(u / chunks_, u % chunks_);
            A state[kLane], p[kLane];
            init_state(state, t, t.k == 0 ? h0 : nullptr);
            std::fill_n(p, t.w, A(1));
            forward_run<true>(a, b, h, t, state, p);
            std::copy_n(state, t.w, &last[carry_at(t)]);
            std::copy_n(p, t.w, &prod[carry_at(t)]);
        });
        chain_forward(last, prod);  // phase 2: last[k] becomes the carry into chunk k + 1
        parallel_units(B_ * tiles_ * (chunks_ - 1), [&](i64 u) {  // phase 3
            Tile t = tile(u / (chunks_ - 1), u % (chunks_ - 1) + 1);
            add_carry_forward(a, h, t, &last[carry_at(t) - static_cast<std::size_t>(B_) * D_]);
        });
    }

    void backward(const In* a, const A* h, const A* h0, const In* gh, A* ga, A* gb, A* gh0) const {
        if (chunks_ == 1) {
            parallel_units(B_ * tiles_, [&](i64 u) {
                Tile t = tile(u, 0);
                A g[kLane];
                std::fill_n(g, t.w, A(0));
                backward_run<true>(a, h, h0, gh, ga, gb, t, g, nullptr);
            });
        } else {
            const std::size_t carry_size = static_cast<std::size_t>(chunks_) * B_ * D_;
            std::vector<A> first(carry_size), prod(carry_size);
            parallel_units(B_ * tiles_ * chunks_, [&](i64 u) {  // phase 1: local g, from 0 at the chunk end
                Tile t = tile(u / chunks_, u % chunks_);
                A g[kLane], q[kLane];
                std::fill_n(g, t.w, A(0));
                std::fill_n(q, t.w, A(1));
                backward_run<false>(a, h, h0, gh, ga, gb, t, g, q);
                std::copy_n(g, t.w, &first[carry_at(t)]);
                std::copy_n(q, t.w, &prod[carry_at(t)]);
            });
            chain_backward(first, prod);  // phase 2: first[k] becomes the true g at the start of chunk k + 1
            parallel_units(B_ * tiles_ * chunks_, [&](i64 u) {  // phase 3
                Tile t = tile(u / chunks_, u % chunks_);
                const A* carry = t.k + 1 < chunks_ ? &first[carry_at(t)] : nullptr;
                add_carry_backward(a, h, h0, ga, gb, t, carry);
            });
        }
        if (gh0) grad_initial(a, gb, gh0);
    }

private:
    i64 B_, T_, D_;
    int threads_;
    i64 tiles_ = 1, chunks_ = 1, chunk_len_ = 1;

    struct Tile {
        i64 b, d0, w, k, t0, t1;
    };

    Tile tile(i64 lane_unit, i64 k) const {
        const i64 bi = lane_unit / tiles_, d0 = (lane_unit % tiles_) * kLane;
        const i64 t0 = std::min(T_, k * chunk_len_), t1 = std::min(T_, t0 + chunk_len_);
        return Tile{bi, d0, std::min(kLane, D_ - d0), k, t0, t1};
    }

    std::size_t at(const Tile& t, i64 time) const { return static_cast<std::size_t>((t.b * T_ + time) * D_ + t.d0); }
    std::size_t carry_at(const Tile& t) const { return static_cast<std::size_t>((t.k * B_ + t.b) * D_ + t.d0); }

    template <class F>
    void parallel_units(i64 units, F&& f) const {
#pragma omp parallel for num_threads(threads_) schedule(static)
        for (i64 u = 0; u < units; ++u) f(u);
    }

    void init_state(A* state, const Tile& t, const A* h0) const {
        for (i64 w = 0; w < t.w; ++w) state[w] = h0 ? h0[t.b * D_ + t.d0 + w] : A(0);
    }

    static A ld(const In* p, i64 i) { return static_cast<A>(to_float(p[i])); }

    // Calls f(lo, hi) on 64-byte pieces of [0, width), last piece first. The backward scans walk
    // time downwards; walking each row downwards too keeps every stream strictly descending, which
    // the hardware prefetchers follow (rows read upwards inside a downward walk ran ~3x slower).
    template <class F>
    static void for_lines_descending(i64 width, F&& f) {
        constexpr i64 kPiece = 64 / sizeof(A);
        for (i64 lo = (width - 1) / kPiece * kPiece; lo >= 0; lo -= kPiece) f(lo, std::min(width, lo + kPiece));
    }

    // h_t = a_t · h_{t−1} + b_t over the tile's time range; with_prod also keeps Π a_t.
    template <bool with_prod>
    void forward_run(const In* a, const In* b, A* h, const Tile& t, A* state, A* prod) const {
        for (i64 time = t.t0; time < t.t1; ++time) {
            const std::size_t i = at(t, time);
            const In* ap = a + i;
            const In* bp = b + i;
            A* hp = h + i;
#pragma omp simd
            for (i64 w = 0; w < t.w; ++w) {
                const A av = ld(ap, w);
                state[w] = av * state[w] + ld(bp, w);
                hp[w] = state[w];
                if constexpr (with_prod) prod[w] *= av;
            }
        }
    }

    void chain_forward(std::vector<A>& last, const std::vector<A>& prod) const {
        const i64 lanes = B_ * D_;
#pragma omp parallel for num_threads(threads_) schedule(static)
        for (i64 l = 0; l < lanes; ++l) {
            A carry = last[l];  // chunk 0 started from h0: its last state is already true
            for (i64 k = 1; k < chunks_; ++k) {
                const std::size_t i = static_cast<std::size_t>(k) * lanes + l;
                carry = prod[i] * carry + last[i];
                last[i] = carry;
            }
        }
    }

    void add_carry_forward(const In* a, A* h, const Tile& t, const A* carry) const {
        A p[kLane];
        std::fill_n(p, t.w, A(1));
        for (i64 time = t.t0; time < t.t1; ++time) {
            const std::size_t i = at(t, time);
            const In* ap = a + i;
            A* hp = h + i;
#pragma omp simd
            for (i64 w = 0; w < t.w; ++w) {
                p[w] *= ld(ap, w);
                hp[w] += carry[w] != A(0) ? p[w] * carry[w] : A(0);
            }
        }
    }

    // h_{t−1} for step `time` of the tile: h, h0 at t = 0, or zeros.
    const A* prev_state(const A* h, const A* h0, const Tile& t, i64 time, const A* zero) const {
        if (time > 0) return h + at(t, time - 1);
        return h0 ? h0 + t.b * D_ + t.d0 : zero;
    }

    // Reverse scan g_t = grad_h_t + a_{t+1} · g_{t+1} over the tile's range, from g (at t1) downwards,
    // writing grad_b = g. fused: also grad_a = g · h_{t−1} (the range needs no carry); otherwise q
    // keeps Π a_{t+1} over the range, for the carry of phase 2.
    template <bool fused>
    void backward_run(const In* a, const A* h, const A* h0, const In* gh, A* ga, A* gb, const Tile& t,
                      A* g, A* q) const {
        // a_{t+1} is kept from the step before (loaded in the same sweep as the stores of that row:
        // reading it a step later would follow stores to rows 4 KiB apart and stall on 4K aliasing).
        A zero[kLane] = {}, a_next[kLane];
        if (t.t1 < T_) {
            const In* an = a + at(t, t.t1);  // a at the first step of the next chunk
            for (i64 w = 0; w < t.w; ++w) a_next[w] = ld(an, w);
        } else {
            std::fill_n(a_next, t.w, A(0));  // g_{T−1} = grad_h_{T−1}: no step after the end
        }
        const bool carry_in = t.t1 < T_;  // only the phase-1 runs of chunks ≠ last see a next step
        for (i64 time = t.t1 - 1; time >= t.t0; --time) {
            const std::size_t i = at(t, time);
            const In* ap = a + i;
            const In* ghp = gh + i;
            A* gbp = gb + i;
            A* gap = ga + i;
            const A* hp = prev_state(h, h0, t, time, zero);
            const bool first = time == t.t1 - 1;  // local g starts from 0 at the chunk end
            for_lines_descending(t.w, [&](i64 lo, i64 hi) {
#pragma omp simd
                for (i64 w = lo; w < hi; ++w) {
                    const A an = a_next[w];
                    const A gv = ld(ghp, w) + (first ? A(0) : an * g[w]);
                    if constexpr (!fused) q[w] *= (first && !carry_in) ? A(1) : an;
                    a_next[w] = ld(ap, w);
                    g[w] = gv;
                    gbp[w] = gv;
                    if constexpr (fused) gap[w] = gv * hp[w];
                }
            });
        }
    }

    void chain_backward(std::vector<A>& first, const std::vector<A>& prod) const {
        const i64 lanes = B_ * D_;
#pragma omp parallel for num_threads(threads_) schedule(static)
        for (i64 l = 0; l < lanes; ++l) {
            A carry = 0;  // true g at the start of chunk k + 1 (none past the end)
            for (i64 k = chunks_ - 1; k >= 0; --k) {
                const std::size_t i = static_cast<std::size_t>(k) * lanes + l;
                const A g_first = carry != A(0) ? first[i] + prod[i] * carry : first[i];  // true g at t0_k
                first[i] = carry;
                carry = g_first;
            }
        }
    }

    void add_carry_backward(const In* a, const A* h, const A* h0, A* ga, A* gb, const Tile& t,
                            const A* carry) const {
        A q[kLane], zero[kLane] = {};
        std::fill_n(q, t.w, A(1));
        for (i64 time = t.t1 - 1; time >= t.t0; --time) {
            const std::size_t i = at(t, time);
            A* gbp = gb + i;
            A* gap = ga + i;
            const A* hp = prev_state(h, h0, t, time, zero);
            const In* an = a + i + D_;  // a_{t+1} (read only when this chunk is not the last)
            for_lines_descending(t.w, [&](i64 lo, i64 hi) {
                if (carry) {
#pragma omp simd
                    for (i64 w = lo; w < hi; ++w) {
                        q[w] *= ld(an, w);
                        const A gv = gbp[w] + (carry[w] != A(0) ? q[w] * carry[w] : A(0));
                        gbp[w] = gv;
                        gap[w] = gv * hp[w];
                    }
                } else {
#pragma omp simd
                    for (i64 w = lo; w < hi; ++w) gap[w] = gbp[w] * hp[w];
                }
            });
        }
    }

    // grad_h0 = a_0 · g_0
    void grad_initial(const In* a, const A* gb, A* gh0) const {
#pragma omp parallel for num_threads(threads_) schedule(static)
        for (i64 bi = 0; bi < B_; ++bi)
            for (i64 d = 0; d < D_; ++d) {
                const std::size_t i = static_cast<std::size_t>(bi * T_) * D_ + d;
                gh0[bi * D_ + d] = T_ ? static_cast<A>(to_float(a[i])) * gb[i] : A(0);
            }
    }
};

}  // namespace

void scan_forward(const void* a, const void* b, DType dtype, const void* h0, void* h, i64 B, i64 T, i64 D,
                  int num_threads) {
    dispatch(dtype, [&](auto tag) {
        using In = decltype(tag);
        using A = acc_t<In>;
        Scan<In>(B, T, D, clamp_threads(num_threads))
            .forward(static_cast<const In*>(a), static_cast<const In*>(b), static_cast<const A*>(h0),
                     static_cast<A*>(h));
    });
}

void scan_backward(const void* a, const void* h, const void* h0, const void* grad_h, DType dtype,
                   void* grad_a, void* grad_b, void* grad_h0, i64 B, i64 T, i64 D, int num_threads) {
    dispatch(dtype, [&](auto tag) {
        using In = decltype(tag);
        using A = acc_t<In>;
        Scan<In>(B, T, D, clamp_threads(num_threads))
            .backward(static_cast<const In*>(a), static_cast<const A*>(h), static_cast<const A*>(h0),
                      static_cast<const In*>(grad_h), static_cast<A*>(grad_a), static_cast<A*>(grad_b),
                      static_cast<A*>(grad_h0));
    });
}

}  // namespace ls
