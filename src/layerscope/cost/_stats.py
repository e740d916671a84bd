"""Summaries of repeated measurements: median, IQR, mean ± std, bootstrap CI; Mann–Whitney U.

All statistics come from NumPy / ``scipy.stats``; nothing here is a home-made test.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats


@dataclass
class Summary:
    n: int
    median: float
    q1: float
    q3: float
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for n = 1
    min: float
    max: float
    ci_low: float | None = None  # 95% bootstrap CI of the median (compare() only)
    ci_high: float | None = None
    samples: list[float] = field(default_factory=list)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "median": self.median, "iqr": self.iqr, "q1": self.q1, "q3": self.q3,
                "mean": self.mean, "std": self.std, "min": self.min, "max": self.max, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "samples": list(self.samples)}


def summarize(samples: Sequence[float], *, ci: bool = False, seed: int = 0) -> Summary:
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to summarise")
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    lo, hi = bootstrap_median_ci(x, seed=seed) if ci else (None, None)
    return Summary(int(x.size), float(med), float(q1), float(q3), float(x.mean()),
                   float(x.std(ddof=1)) if x.size > 1 else 0.0, float(x.min()), float(x.max()), lo, hi,
                   [float(v) for v in x])


def bootstrap_median_ci(x: np.ndarray, level: float = 0.95,
                        seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the median (``scipy.stats.bootstrap``). The percentile method rather than
    BCa: BCa's jackknife degenerates on the many ties that timer resolution produces."""
    if x.size < 3 or np.all(x == x[0]):
        return (float(x[0]), float(x[0])) if x.size >= 3 else (None, None)
    res = stats.bootstrap((x,), np.median, confidence_level=level, n_resamples=4999, method="percentile",
                          vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass
class PairwiseTest:
    metric: str
    a: str
    b: str
    u: float  # Mann–Whitney U of a
    p_value: float
    p_adjusted: float  # Benjamini–Hochberg over all pairs of this metric
    prob_a_greater: float  # U / (n_a · n_b): P(a sample of a > one of b), ties count ½
    median_ratio: float | None  # median(a) / median(b)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pairwise_mann_whitney(metric: str, samples: dict[str, Sequence[float]]) -> list[PairwiseTest]:
    """Two-sided Mann–Whitney U for every pair (``scipy.stats.mannwhitneyu``), BH-adjusted
    (``scipy.stats.false_discovery_control``)."""
    names = list(samples)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            xa, xb = np.asarray(samples[a], float), np.asarray(samples[b], float)
            if xa.size < 2 or xb.size < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = stats.mannwhitneyu(xa, xb, alternative="two-sided")
            mb = float(np.median(xb))
            u = float(res.statistic)
            rows.append([a, b, u, float(res.pvalue), u / (xa.size * xb.size),
                         float(np.median(xa)) / mb if mb > 0 else None])
    if not rows:
        return []
    adjusted = stats.false_discovery_control([r[3] for r in rows], method="bh")
    return [PairwiseTest(metric, a, b, u, p, float(q), pg, ratio)
            for (a, b, u, p, pg, ratio), q in zip(rows, adjusted, strict=False)]
