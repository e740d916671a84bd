"""Spearman correlation between two feature sets, permutation p-values, Benjamini–Hochberg, Fisher CIs.

A *block* is one set of tests: features ``a [n, p]`` and ``b [n, q]`` over the same n samples; every
pair (a_i, b_j) is tested. Under the null, the pairing of a's rows with b's is exchangeable; the
p-value of a pair is the share of random re-pairings (permutations π of b's rows, the same π for
every column, so the dependence within each set is kept) whose |ρ| reaches the observed one:
``p = (1 + #{|ρ_π| ≥ |ρ_obs|}) / (B + 1)`` (Phipson & Smyth, 2010, "Permutation p-values should never
be zero"). When ``n! ≤ B`` every permutation is enumerated instead: ``p = #{|ρ_π| ≥ |ρ_obs|} / n!``.

Computing ρ_π for every pair of every block costs O(B·n·p·q) per block. It is not needed: Spearman's
ρ is Pearson's r of standardised average ranks ``z``, and a tie-free feature's ``z`` is an ordering
of the same vector ``u = standardise(1 … n)``. Writing ``z_b = u∘σ_b``,

    ρ(a, b∘π) = Σ_i z_a,i · u_σb(π(i)) / n  ~  Σ_i z_a,i · u_τ(i) / n     (τ = σ_b∘π is uniform too)

so for a tie-free ``b`` the null distribution depends on ``a`` alone (and on nothing at all when ``a``
is tie-free too). Hence one sample of B uniform permutations τ per sample size n, with ``U = u[τ]``,
gives every pair its null: ``|U·u|/n`` for two tie-free features, ``|U·z_f|/n`` for a tied feature f
with a tie-free partner, and ``z_b[τ]·z_a/n`` (permuted as it is) for two tied features. Each pair's
p-value is an ordinary Monte-Carlo permutation p-value; pairs (and blocks of the same n) share the
random permutations, as the pairs of one block do in the textbook joint permutation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm, rankdata

FDR_Q = 0.05
_CHUNK = 256
_TOL = 1e-12  # |ρ_π| ≥ |ρ_obs| − tol: the identity permutation must count, despite rounding


def standardised_ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks of each column, centred and scaled to unit population std: ``[n, k]``."""
    r = rankdata(x, axis=0)
    r = r - r.mean(axis=0)
    return r / np.sqrt((r * r).mean(axis=0))


def spearman_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ between every column of ``a [n, p]`` and of ``b [n, q]``: ``[p, q]``."""
    return np.clip(standardised_ranks(a).T @ standardised_ranks(b) / a.shape[0], -1.0, 1.0)


def tie_free(x: np.ndarray) -> np.ndarray:
    """Columns of ``x`` whose values are all distinct: ``[k]`` bool."""
    return ~(np.diff(np.sort(x, axis=0), axis=0) == 0).any(axis=0)


@dataclass
class RankBlock:
    """The standardised ranks of one block, its ρ, and the permutation counts gathered so far."""

    za: np.ndarray  # (n, p)
    zb: np.ndarray  # (n, q)
    free_a: np.ndarray  # (p,) bool: no ties
    free_b: np.ndarray  # (q,) bool
    rho: np.ndarray = field(init=False)  # (p, q)
    hits: np.ndarray = field(init=False)  # (p, q): permutations with |ρ_π| ≥ |ρ_obs|

    def __post_init__(self) -> None:
        self.rho = np.clip(self.za.T @ self.zb / self.n, -1.0, 1.0)
        self.hits = np.zeros_like(self.rho)

    @classmethod
    def of(cls, a: np.ndarray, b: np.ndarray) -> RankBlock:
        return cls(standardised_ranks(a), standardised_ranks(b), tie_free(a), tie_free(b))

    @property
    def n(self) -> int:
        return self.za.shape[0]

    @property
    def target(self) -> np.ndarray:
        return np.abs(self.rho) - _TOL


def _random_permutations(n: int, count: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Chunks ``[k, n]`` of uniform random permutations (``count`` in all)."""
    done = 0
    while done < count:
        k = min(_CHUNK, count - done)
        yield rng.permuted(np.broadcast_to(np.arange(n), (k, n)), axis=1)
        done += k


def _all_permutations(n: int) -> Iterator[np.ndarray]:
    it = itertools.permutations(range(n))
    while chunk := list(itertools.islice(it, _CHUNK)):
        yield np.array(chunk)


def _count_exact(block: RankBlock) -> None:
    """Every permutation of b's rows, jointly: ``hits`` over all ``n!``."""
    for perms in _all_permutations(block.n):
        rho = np.matmul(block.za.T, block.zb[perms]) / block.n  # (k, p, q)
        block.hits += (np.abs(rho) >= block.target).sum(axis=0)


def _count_shared(blocks: list[RankBlock], n: int, permutations: int, rng: np.random.Generator) -> None:
    """``hits`` of every pair of ``blocks`` (all of size n) from one sample of random permutations."""
    u = standardised_ranks(np.arange(n, dtype=np.float64)[:, None])[:, 0]
    plan = _Plan.of(blocks)
    null_free, tied_hits = [], np.zeros(len(plan.targets))
    for perms in _random_permutations(n, permutations, rng):
        big_u = u[perms]  # (k, n): row k is u∘τ_k
        null_free.append(np.abs(big_u @ u) / n)  # (k,): the null of two tie-free features
        if plan.targets.size:
            null = np.abs(big_u @ plan.columns) / n  # (k, tied features): the null of each
            tied_hits += (null[:, plan.column_of] >= plan.targets).sum(axis=0)
        for block, i, j in plan.both_tied:  # b's column permuted as it is
            rho = np.abs(block.zb[perms, j] @ block.za[:, i]) / n  # (k, n) @ (n,) -> (k,)
            block.hits[i, j] += (rho >= block.target[i, j]).sum()
    ordered = np.sort(np.concatenate(null_free))
    for block, (i, j) in plan.one_tied:
        block.hits[i, j] += tied_hits[: i.size]
        tied_hits = tied_hits[i.size:]
    for block in blocks:
        ff = np.ix_(block.free_a, block.free_b)
        block.hits[ff] += ordered.size - np.searchsorted(ordered, block.target[ff], "left")


@dataclass
class _Plan:
    """The pairs with one tied feature, whose null is that feature's alone, gathered over blocks so
    that each chunk of permutations needs one matrix product and one comparison for all of them."""

    columns: np.ndarray  # (n, f): the standardised ranks of every tied feature
    column_of: np.ndarray  # (pairs,): which column is each pair's null
    targets: np.ndarray  # (pairs,): each pair's |ρ_obs| − tol
    one_tied: list[tuple[RankBlock, tuple[np.ndarray, np.ndarray]]]  # each block's (i, j) of those pairs
    both_tied: list[tuple[RankBlock, int, int]]

    @classmethod
    def of(cls, blocks: list[RankBlock]) -> _Plan:
        columns, column_of, targets, one_tied, both_tied = [], [], [], [], []
        for b in blocks:
            ta, tb = np.nonzero(~b.free_a)[0], np.nonzero(~b.free_b)[0]
            pairs_i, pairs_j = [], []
            for i in ta:  # tied a with a tie-free b: the null depends on a alone
                pairs_i += [i] * int(b.free_b.sum())
                pairs_j += np.nonzero(b.free_b)[0].tolist()
                columns.append(b.za[:, i])
                column_of += [len(columns) - 1] * int(b.free_b.sum())
            for j in tb:  # tie-free a with a tied b: the null depends on b alone
                pairs_i += np.nonzero(b.free_a)[0].tolist()
                pairs_j += [j] * int(b.free_a.sum())
                columns.append(b.zb[:, j])
                column_of += [len(columns) - 1] * int(b.free_a.sum())
            i_idx, j_idx = np.array(pairs_i, dtype=np.int64), np.array(pairs_j, dtype=np.int64)
            targets.append(b.target[i_idx, j_idx])
            one_tied.append((b, (i_idx, j_idx)))
            both_tied += [(b, int(i), int(j)) for i in ta for j in tb]
        n = blocks[0].n
        return cls(np.column_stack(columns) if columns else np.zeros((n, 0)),
                   np.array(column_of, dtype=np.int64), np.concatenate(targets), one_tied, both_tied)


def permutation_pvalues(blocks: list[RankBlock], permutations: int,
                        rng: np.random.Generator) -> list[tuple[np.ndarray, bool]]:
    """``(p-values [p, q], exact)`` of every block (module docstring)."""
    by_n: dict[int, list[RankBlock]] = {}
    for b in blocks:
        if math.factorial(b.n) <= permutations:
            _count_exact(b)
        else:
            by_n.setdefault(b.n, []).append(b)
    for n in sorted(by_n):
        _count_shared(by_n[n], n, permutations, rng)
    out = []
    for b in blocks:
        exact = math.factorial(b.n) <= permutations
        out.append((b.hits / math.factorial(b.n) if exact else (1.0 + b.hits) / (permutations + 1.0), exact))
    return out


def permutation_test(a: np.ndarray, b: np.ndarray, permutations: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(ρ [p, q], p-values [p, q], exact)`` of one block."""
    block = RankBlock.of(a, b)
    p, exact = permutation_pvalues([block], permutations, rng)[0]
    return block.rho, p, exact


def benjamini_hochberg(pvalues: np.ndarray, q: float = FDR_Q) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini & Hochberg (1995) step-up: ``(rejected, adjusted q-values)``, both shaped like ``pvalues``.

    Reject the ``k`` smallest p-values, ``k = max{i : p_(i) ≤ i·q/m}``; the adjusted value of ``p_(i)``
    is ``min_{j ≥ i} m·p_(j)/j`` (capped at 1), so ``rejected == (adjusted ≤ q)``.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    m = p.size
    if m == 0:
        return np.zeros_like(pvalues, dtype=bool), np.zeros_like(pvalues, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    below = np.nonzero(p[order] <= np.arange(1, m + 1) * q / m)[0]
    rejected = np.zeros(m, dtype=bool)
    if below.size:
        rejected[order[: below[-1] + 1]] = True
    return rejected.reshape(np.shape(pvalues)), out.reshape(np.shape(pvalues))


def fisher_ci(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Fisher-z interval for Spearman's ρ with variance 1.06/(n − 3) (Fieller, Hartley & Pearson, 1957)."""
    if n <= 3:
        return float("nan"), float("nan")
    z = math.atanh(max(min(rho, 1 - 1e-12), -1 + 1e-12))
    half = norm.ppf(0.5 + level / 2) * math.sqrt(1.06 / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)
