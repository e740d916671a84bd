"""Triton kernels (``@triton.jit``): fused channel partials, the chunked linear scan, the histogram.

Imported lazily by :mod:`layerscope.kernels._triton`, once per mode: compiled for CUDA, or run by the
Triton interpreter when ``TRITON_INTERPRET=1`` (which also accepts CPU tensors).
"""

from __future__ import annotations

import triton
import triton.language as tl

# ---- fused channel reduction: per-(sample, split, channel) partials ---------------------------------


@triton.jit
def _scan_lane(lane, D, BLOCK_D: tl.constexpr):
    """Program ``lane`` of a scan grid → (batch index, the BLOCK_D feature indices, their mask)."""
    nd = tl.cdiv(D, BLOCK_D)
    d = (lane % nd) * BLOCK_D + tl.arange(0, BLOCK_D)
    return (lane // nd).to(tl.int64), d, d < D


@triton.jit
def channel_partials_kernel(
    x_ptr,
    thr_ptr,
    cnt_ptr,
    mean_ptr,
    m2_ptr,
    min_ptr,
    max_ptr,
    zeros_ptr,
    nan_ptr,
    inf_ptr,
    above_ptr,
    C,
    S,
    sn,
    sc,
    ss,
    chunk,
    split,
    num_thr,
    num_parts,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
    T_PAD: tl.constexpr,
    F64: tl.constexpr,
):
    """Program (part, channel block): part = n·split + k covers positions [k·chunk, (k+1)·chunk) of
    sample n. Tiles [BLOCK_C, BLOCK_S] are reduced in registers (mean, then Σd and Σd² about it) and
    folded with Chan's update in float64; outputs are [num_parts, C] (above: [T, num_parts, C])."""
    part = tl.program_id(0)
    n = part // split
    k = part % split
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # [BC]
    c_ok = c < C
    s_begin = k * chunk
    s_end = tl.minimum(S, s_begin + chunk)
    dt = tl.float64 if F64 else tl.float32
    t_idx = tl.arange(0, T_PAD)
    thr = tl.load(thr_ptr + t_idx, mask=t_idx < num_thr, other=float("inf")).to(dt)  # [T]
    run_n = tl.zeros([BLOCK_C], dtype=tl.float64)
    run_mean = tl.zeros([BLOCK_C], dtype=tl.float64)
    run_m2 = tl.zeros([BLOCK_C], dtype=tl.float64)
    lo = tl.full([BLOCK_C], float("inf"), dtype=dt)
    hi = tl.full([BLOCK_C], float("-inf"), dtype=dt)
    zeros = tl.zeros([BLOCK_C], dtype=tl.int32)
    nans = tl.zeros([BLOCK_C], dtype=tl.int32)
    infs = tl.zeros([BLOCK_C], dtype=tl.int32)
    above = tl.zeros([T_PAD, BLOCK_C], dtype=tl.int32)
    base = x_ptr + n.to(tl.int64) * sn + c.to(tl.int64)[:, None] * sc  # [BC, 1]
    for s0 in range(s_begin, s_end, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = c_ok[:, None] & (s[None, :] < s_end)  # [BC, BS]
        v = tl.load(base + s.to(tl.int64)[None, :] * ss, mask=m, other=0.0).to(dt)
        fin = m & (tl.abs(v) < float("inf"))  # NaN compares false
        zeros += tl.sum((m & (v == 0)).to(tl.int32), axis=1)
        nans += tl.sum((m & (v != v)).to(tl.int32), axis=1)
        infs += tl.sum((m & (tl.abs(v) == float("inf"))).to(tl.int32), axis=1)
        lo = tl.minimum(lo, tl.min(tl.where(fin, v, float("inf")), axis=1))
        hi = tl.maximum(hi, tl.max(tl.where(fin, v, float("-inf")), axis=1))
        gt = fin[None, :, :] & (v[None, :, :] > thr[:, None, None])  # [T, BC, BS]
        above += tl.sum(gt.to(tl.int32), axis=2)
        # tile moments: shift by the tile mean, then correct with Σd (no cancellation)
        bn = tl.sum(fin.to(tl.int32), axis=1)
        nb = tl.maximum(bn, 1).to(dt)
        shift = tl.sum(tl.where(fin, v, 0.0), axis=1) / nb
        d = tl.where(fin, v - shift[:, None], 0.0)
        sd = tl.sum(d, axis=1)
        sq = tl.sum(d * d, axis=1)
        b_mean = shift.to(tl.float64) + sd.to(tl.float64) / nb.to(tl.float64)
        b_m2 = tl.maximum(sq.to(tl.float64) - sd.to(tl.float64) * sd.to(tl.float64) / nb.to(tl.float64), 0.0)
        # Chan, Golub & LeVeque (1979): M2 = M2a + M2b + δ²·na·nb/(na + nb)
        nbf = bn.to(tl.float64)
        total = run_n + nbf
        w_b = tl.where(total > 0, nbf / tl.maximum(total, 1.0), 0.0)
        delta = tl.where(bn > 0, b_mean - run_mean, 0.0)
        run_mean += delta * w_b
        run_m2 += tl.where(bn > 0, b_m2, 0.0) + delta * delta * run_n * w_b
        run_n = total
    out = part.to(tl.int64) * C + c
    tl.store(cnt_ptr + out, run_n.to(tl.int64), mask=c_ok)
    tl.store(mean_ptr + out, run_mean, mask=c_ok)
    tl.store(m2_ptr + out, run_m2, mask=c_ok)
    tl.store(min_ptr + out, lo.to(tl.float64), mask=c_ok)
    tl.store(max_ptr + out, hi.to(tl.float64), mask=c_ok)
    tl.store(zeros_ptr + out, zeros.to(tl.int64), mask=c_ok)
    tl.store(nan_ptr + out, nans.to(tl.int64), mask=c_ok)
    tl.store(inf_ptr + out, infs.to(tl.int64), mask=c_ok)
    above_at = t_idx.to(tl.int64)[:, None] * num_parts * C + out[None, :]
    tl.store(above_ptr + above_at, above.to(tl.int64), mask=(t_idx[:, None] < num_thr) & c_ok[None, :])


# ---- linear scan h_t = a_t·h_{t−1} + b_t over [B, T, D], chunked in time ------------------------------


@triton.jit
def scan_fwd_chunk_kernel(
    a_ptr,
    b_ptr,
    h0_ptr,
    h_ptr,
    last_ptr,
    prod_ptr,
    B,
    T,
    D,
    chunk,
    HAS_H0: tl.constexpr,
    BLOCK_D: tl.constexpr,
    F64: tl.constexpr,
):
    """Phase 1: scan chunk k of lanes (b, d-block) from a zero state (chunk 0: from h0)."""
    lane = tl.program_id(0)
    k = tl.program_id(1)
    bi, d, dm = _scan_lane(lane, D, BLOCK_D)
    dt = tl.float64 if F64 else tl.float32
    state = tl.zeros([BLOCK_D], dtype=dt)
    if HAS_H0:
        init = tl.load(h0_ptr + bi * D + d, mask=dm, other=0.0).to(dt)
        state = tl.where(k == 0, init, state)
    prod = tl.full([BLOCK_D], 1.0, dtype=dt)
    t0 = k * chunk
    t1 = tl.minimum(T, t0 + chunk)
    for t in range(t0, t1):
        off = (bi * T + t) * D + d
        av = tl.load(a_ptr + off, mask=dm, other=0.0).to(dt)
        state = av * state + tl.load(b_ptr + off, mask=dm, other=0.0).to(dt)
        prod = prod * av
        tl.store(h_ptr + off, state, mask=dm)
    carry = (k.to(tl.int64) * B + bi) * D + d
    tl.store(last_ptr + carry, state, mask=dm)
    tl.store(prod_ptr + carry, prod, mask=dm)


@triton.jit
def scan_fwd_chain_kernel(last_ptr, prod_ptr, BD, K, BLOCK: tl.constexpr):
    """Phase 2: last[k] ← prod[k]·last[k−1] + last[k], the true state at the end of each chunk."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < BD
    carry = tl.load(last_ptr + i, mask=m, other=0.0)
    for k in range(1, K):
        at = k * BD + i
        carry = tl.load(prod_ptr + at, mask=m, other=0.0) * carry + tl.load(last_ptr + at, mask=m, other=0.0)
        tl.store(last_ptr + at, carry, mask=m)


@triton.jit
def scan_fwd_fix_kernel(a_ptr, h_ptr, last_ptr, B, T, D, chunk, BLOCK_D: tl.constexpr, F64: tl.constexpr):
    """Phase 3: chunk k ≥ 1 adds (Π_{s≤t} a_s)·H_{k−1} (a zero carry is not added)."""
    lane = tl.program_id(0)
    k = tl.program_id(1) + 1
    bi, d, dm = _scan_lane(lane, D, BLOCK_D)
    dt = tl.float64 if F64 else tl.float32
    carry = tl.load(last_ptr + ((k - 1).to(tl.int64) * B + bi) * D + d, mask=dm, other=0.0)
    prod = tl.full([BLOCK_D], 1.0, dtype=dt)
    t0 = k * chunk
    t1 = tl.minimum(T, t0 + chunk)
    for t in range(t0, t1):
        off = (bi * T + t) * D + d
        prod = prod * tl.load(a_ptr + off, mask=dm, other=0.0).to(dt)
        h = tl.load(h_ptr + off, mask=dm, other=0.0)
        tl.store(h_ptr + off, h + tl.where(carry != 0, prod * carry, 0.0), mask=dm)


@triton.jit
def scan_bwd_chunk_kernel(
    a_ptr,
    h_ptr,
    h0_ptr,
    gh_ptr,
    ga_ptr,
    gb_ptr,
    first_ptr,
    prod_ptr,
    B,
    T,
    D,
    chunk,
    HAS_H0: tl.constexpr,
    FUSED: tl.constexpr,
    BLOCK_D: tl.constexpr,
    F64: tl.constexpr,
):
    """Phase 1 of the backward: g_t = grad_h_t + a_{t+1}·g_{t+1} down chunk k, from 0 at its end;
    g → grad_b. FUSED (one chunk): also grad_a = g·h_{t−1}. Else keeps g at the chunk start and
    Π_{s=t0+1}^{t1} a_s for phase 2."""
    lane = tl.program_id(0)
    k = tl.program_id(1)
    bi, d, dm = _scan_lane(lane, D, BLOCK_D)
    dt = tl.float64 if F64 else tl.float32
    g = tl.zeros([BLOCK_D], dtype=dt)
    q = tl.full([BLOCK_D], 1.0, dtype=dt)
    t0 = k * chunk
    t1 = tl.minimum(T, t0 + chunk)
    for i in range(0, t1 - t0):
        t = t1 - 1 - i
        off = (bi * T + t) * D + d
        steps = tl.zeros([BLOCK_D], dtype=tl.int32) + t  # t as a vector: masks must be vectors
        has_next = (steps + 1) < T
        an = tl.load(a_ptr + off + D, mask=dm & has_next, other=0.0).to(dt)
        g = tl.load(gh_ptr + off, mask=dm, other=0.0).to(dt) + tl.where(i == 0, 0.0, an * g)
        q = q * tl.where(has_next, an, 1.0)
        tl.store(gb_ptr + off, g, mask=dm)
        if FUSED:
            h_prev = tl.load(h_ptr + off - D, mask=dm & (steps > 0), other=0.0)
            if HAS_H0:
                h_prev = tl.where(steps > 0, h_prev, tl.load(h0_ptr + bi * D + d, mask=dm, other=0.0))
            tl.store(ga_ptr + off, g * h_prev, mask=dm)
    carry = (k.to(tl.int64) * B + bi) * D + d
    tl.store(first_ptr + carry, g, mask=dm)
    tl.store(prod_ptr + carry, q, mask=dm)


@triton.jit
def scan_bwd_chain_kernel(first_ptr, prod_ptr, BD, K, BLOCK: tl.constexpr, F64: tl.constexpr):
    """Phase 2 of the backward: first[k] ← the true g at the start of chunk k + 1 (0 for the last)."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < BD
    carry = tl.zeros([BLOCK], dtype=tl.float64 if F64 else tl.float32)
    for j in range(0, K):
        at = (K - 1 - j) * BD + i
        local = tl.load(first_ptr + at, mask=m, other=0.0)
        g_first = local + tl.where(carry != 0, tl.load(prod_ptr + at, mask=m, other=0.0) * carry, 0.0)
        tl.store(first_ptr + at, carry, mask=m)
        carry = g_first


@triton.jit
def scan_bwd_fix_kernel(
    a_ptr,
    h_ptr,
    h0_ptr,
    ga_ptr,
    gb_ptr,
    first_ptr,
    B,
    T,
    D,
    chunk,
    K,
    HAS_H0: tl.constexpr,
    BLOCK_D: tl.constexpr,
    F64: tl.constexpr,
):
    """Phase 3 of the backward: g_t += (Π_{s=t+1}^{t1} a_s)·G_{k+1}; grad_a = g·h_{t−1}."""
    lane = tl.program_id(0)
    k = tl.program_id(1)
    bi, d, dm = _scan_lane(lane, D, BLOCK_D)
    dt = tl.float64 if F64 else tl.float32
    last_chunk = (tl.zeros([BLOCK_D], dtype=tl.int32) + k + 1) >= K
    carry = tl.load(first_ptr + (k.to(tl.int64) * B + bi) * D + d, mask=dm & ~last_chunk, other=0.0)
    q = tl.full([BLOCK_D], 1.0, dtype=dt)
    t0 = k * chunk
    t1 = tl.minimum(T, t0 + chunk)
    for i in range(0, t1 - t0):
        t = t1 - 1 - i
        off = (bi * T + t) * D + d
        steps = tl.zeros([BLOCK_D], dtype=tl.int32) + t
        an = tl.load(a_ptr + off + D, mask=dm & ((steps + 1) < T), other=0.0).to(dt)
        q = q * an
        g = tl.load(gb_ptr + off, mask=dm, other=0.0) + tl.where(carry != 0, q * carry, 0.0)
        tl.store(gb_ptr + off, g, mask=dm)
        h_prev = tl.load(h_ptr + off - D, mask=dm & (steps > 0), other=0.0)
        if HAS_H0:
            h_prev = tl.where(steps > 0, h_prev, tl.load(h0_ptr + bi * D + d, mask=dm, other=0.0))
        tl.store(ga_ptr + off, g * h_prev, mask=dm)


# ---- histogram ----------------------------------------------------------------------------------------


@triton.jit
def histogram_kernel(x_ptr, edges_ptr, counts_ptr, n, lo, hi, scale, bins, BLOCK: tl.constexpr):
    """Bin estimate floor((x − lo)·scale), corrected against the float64 edges (up to 3 steps each
    way); values outside [lo, hi], NaN and ±Inf are not counted."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    v = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float64)
    ok = m & (v >= lo) & (v <= hi)
    j = (tl.where(ok, v - lo, 0.0) * scale).to(tl.int64)
    j = tl.minimum(tl.maximum(j, 0), bins - 1)
    for _ in tl.static_range(3):  # the estimate is off by at most one bin unless edges collapse
        left = tl.load(edges_ptr + j, mask=ok, other=0.0)
        j = tl.where(ok & (j > 0) & (v < left), j - 1, j)
    for _ in tl.static_range(3):
        right = tl.load(edges_ptr + j + 1, mask=ok & (j < bins - 1), other=float("inf"))
        j = tl.where(ok & (j < bins - 1) & (v >= right), j + 1, j)
    tl.atomic_add(counts_ptr + j, tl.full([BLOCK], 1, dtype=tl.int32), mask=ok)
