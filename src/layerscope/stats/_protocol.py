"""The accumulator contract: streaming, bounded state, exact merge, ``state_dict`` round-trip."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from typing_extensions import Self

from .._registry import Registry
from ..capture.layout import LayoutView
from ..kernels import ChannelStats


@runtime_checkable
class Accumulator(Protocol):
    """State is O(channels × statistics); no tensor of the activation is kept after ``update``.

    ``update`` receives the layer's view and the batch's fused channel reduction (computed once per
    activation and shared by every accumulator of the layer, so that moments, rates and coverage cost
    one read). An accumulator that needs the raw values (histogram, spectrum) reads ``view``.
    """

    def update(self, view: LayoutView, reduced: ChannelStats) -> None: ...

    def merge(self, other: Self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self: ...


# name → accumulator class; the class is built as ``cls(**options)`` where options are keyword
# arguments that the Probe passes through (thresholds, bins, ranges …), each class taking what it needs.
ACCUMULATORS: Registry[type] = Registry("statistic")
