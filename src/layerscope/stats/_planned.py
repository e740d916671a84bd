"""Per-batch-shape native plans of the CPU accumulators (``spectrum``, ``spatial``, ``covariance``).

After a batch of a given shape, strides, dtype and layout has gone through an accumulator's general
path, the accumulator keeps ``_fast``: that path's native call with its arguments fixed for such
batches (``_plan_fast``, one per accumulator), or None. A later batch that matches the key takes it
directly; any other batch takes the general path and plans again. Plans hold raw pointers and ctypes
argument tuples, so copies and pickles leave them out.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..capture.layout import LayoutView


def batch_key(view: LayoutView) -> tuple[Any, ...]:
    """What a plan is fixed for: the batch's shape, strides, dtype and layout."""
    data = view.data
    return data.shape, data.stride(), data.dtype, view.channels_last


class Planned:
    """Mixin: ``_fast`` / ``_fast_tried`` bookkeeping around the subclass's ``_plan_fast(view)``."""

    _fast: tuple[Any, ...] | None = None
    _fast_tried: tuple[Any, ...] = ()  # the batch key (and device) of the last planning, plan or not
    # other per-batch caches to reset in copies and pickles: attribute → its empty value
    _TRANSIENT: ClassVar[dict[str, Any]] = {}

    def _plan_fast(self, view: LayoutView) -> tuple[Any, ...] | None:
        """The plan for batches like ``view``: (batch key, …) as the subclass reads it, or None."""
        raise NotImplementedError

    def _holds(self, fast: tuple[Any, ...]) -> bool:
        """Whether the state tensors the plan writes are still this accumulator's (a merge, a restored
        state or a change of precision replaces them)."""
        raise NotImplementedError

    def _planned(self, view: LayoutView) -> tuple[Any, ...] | None:
        """The plan, when ``view`` is a CPU batch of the shape it was made for and the plan's state is
        still this accumulator's (else None)."""
        fast = self._fast
        if fast is not None and fast[0] == batch_key(view) and view.data.is_cpu and self._holds(fast):
            return fast
        return None

    def _replan(self, view: LayoutView) -> None:
        """After a batch took the general path: plan for its key (once per key while none can be made)."""
        key = (*batch_key(view), view.data.device)
        if self._fast is not None or key != self._fast_tried:
            self._fast_tried, self._fast = key, self._plan_fast(view)

    def __getstate__(self) -> dict[str, Any]:
        """For copy and pickle: without the per-batch plans (rebuilt on the next batch)."""
        state = self.__dict__.copy()
        state.update(_fast=None, _fast_tried=(), **self._TRANSIENT)
        return state
