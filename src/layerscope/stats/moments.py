"""Per-channel moments, extremes, zero fraction, activation rates and NaN/Inf counts.

Means and M2 are combined with Chan, Golub & LeVeque's pairwise update (1979, "Updating formulae and
a pairwise algorithm for computing sample variances") in float64, so that ``merge`` of any split of
the data equals one pass over all of it — never Σx² − (Σx)²/n.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from typing_extensions import Self

from ..capture.layout import LayoutView
from ..kernels import ChannelStats
from ._protocol import ACCUMULATORS

DEFAULT_THRESHOLDS = (0.0,)


def chan_combine(
    n_a: torch.Tensor, mean_a: torch.Tensor, m2_a: torch.Tensor,
    n_b: torch.Tensor, mean_b: torch.Tensor, m2_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combine (count, mean, M2) of two disjoint parts; counts may be 0 (float64 arithmetic)."""
    n = n_a + n_b
    n_f = n.to(torch.float64).clamp(min=1.0)
    delta = mean_b - mean_a
    w_b = n_b.to(torch.float64) / n_f
    mean = mean_a + delta * w_b
    m2 = m2_a + m2_b + delta * delta * n_a.to(torch.float64) * w_b
    return n, mean, m2


@ACCUMULATORS.register("moments")
class ChannelMoments:
    """Streaming per-channel statistics from the fused channel reduction."""

    _FIELDS = ("count", "mean", "m2", "min", "max", "zeros", "above", "nan", "inf")

    def __init__(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, **_: Any) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.count: torch.Tensor | None = None  # every field is None until the first update

    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        self._absorb({f: getattr(reduced, f) for f in self._FIELDS})

    def merge(self, other: Self) -> None:
        if other.thresholds != self.thresholds:
            raise ValueError(f"cannot merge moments with thresholds {other.thresholds} into {self.thresholds}")
        if other.count is not None:
            self._absorb({f: getattr(other, f) for f in self._FIELDS})

    def _absorb(self, part: dict[str, torch.Tensor]) -> None:
        if self.count is None:
            for f in self._FIELDS:
                setattr(self, f, part[f].clone())
            return
        if part["count"].shape != self.count.shape:
            raise ValueError(
                f"channel count changed from {self.count.shape[0]} to {part['count'].shape[0]}: a layer's "
                "outputs must keep the same number of channels (set its layout explicitly)"
            )
        part = {f: t.to(self.count.device) for f, t in part.items()}
        self.count, self.mean, self.m2 = chan_combine(
            self.count, self.mean, self.m2, part["count"], part["mean"], part["m2"]
        )
        self.min = torch.minimum(self.min, part["min"])
        self.max = torch.maximum(self.max, part["max"])
        for f in ("zeros", "above", "nan", "inf"):
            setattr(self, f, getattr(self, f) + part[f])

    @property
    def variance(self) -> torch.Tensor:
        """Population variance per channel (NaN where a channel has no finite value)."""
        return self.m2 / self.count.to(torch.float64)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"thresholds": list(self.thresholds)}
        if self.count is not None:
            state.update({f: getattr(self, f).detach().cpu() for f in self._FIELDS})
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        acc = cls(thresholds=state["thresholds"])
        if "count" in state:
            for f in cls._FIELDS:
                setattr(acc, f, torch.as_tensor(state[f]))
        return acc
