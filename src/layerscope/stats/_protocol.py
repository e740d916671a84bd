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


class GradAccumulator(Accumulator, Protocol):
    """An accumulator of gradient statistics: ``needs_grad = True`` makes the Probe call
    ``update_grad(view, grad_view)`` when the activation's gradient arrives in a backward pass."""

    needs_grad: bool

    def update_grad(self, view: LayoutView, grad: LayoutView) -> None: ...


# name → accumulator class; the class is built as ``cls(**options)`` where options are keyword
# arguments that the Probe passes through (thresholds, bins, ranges …), each class taking what it needs.
# The Probe also passes ``weight``: the layer's weight tensor (dim ≥ 2, detached) or None, for
# statistics of connection strengths; an accumulator reduces it at once and keeps no reference.
ACCUMULATORS: Registry[type] = Registry("statistic")
