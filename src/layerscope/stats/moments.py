"""Per-channel moments, extremes, zero fraction, activation rates and NaN/Inf counts.

Means and M2 are combined with Chan, Golub & LeVeque's pairwise update (1979, "Updating formulae and
a pairwise algorithm for computing sample variances") in float64, so that ``merge`` of any split of
the data equals one pass over all of it — never Σx² − (Σx)²/n.

State on CPU is merged in place by the native kernel when ``layerscope._C`` is built
(``kernels.state_kernels``: the same float64 formula in the same operation order as
:func:`chan_combine`); otherwise (CUDA, no compiler) by the torch code here.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import torch
from typing_extensions import Self

from ..capture.layout import LayoutView
from ..kernels import ChannelStats, state_kernels
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
    _FLOATS = ("mean", "m2", "min", "max")  # float64; the others int64
    _fields = staticmethod(attrgetter(*_FIELDS))  # obj → its fields as a tuple, in _FIELDS order

    def __init__(
        self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, backend: str | None = None, **_: Any
    ) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.backend = backend  # a forced kernel backend: "torch" merges with the torch code on CPU too
        self.count: torch.Tensor | None = None  # every field is None until the first update
        self._np_state: tuple[Any, ...] | None = None  # NumPy views of the CPU state (native merges)
        self._native_merge: Any = None  # the native merge into _np_state, when there is one (see _views)

    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        arrays = getattr(reduced, "arrays", None)  # NumPy arrays of a native reduction
        merge = self._native_merge
        if arrays is not None and merge is not None and arrays[0].shape == self._np_state[0].shape:
            merge(self._np_state, arrays[:9])  # NumPy partial straight into the NumPy views of the state
            return
        self._absorb(self._fields(reduced))

    def merge(self, other: Self) -> None:
        if other.thresholds != self.thresholds:
            raise ValueError(f"cannot merge moments with thresholds {other.thresholds} into {self.thresholds}")
        if other.count is not None:
            self._absorb(self._fields(other))

    def _absorb(self, fields: tuple[torch.Tensor, ...]) -> None:
        """Fold a partial (its tensors in ``_FIELDS`` order) into the state."""
        if self.count is None:
            for f, t in zip(self._FIELDS, fields, strict=True):  # own copies: updated in place later
                setattr(self, f, t.clone(memory_format=torch.contiguous_format))
            self._views()
            return
        if fields[0].shape != self.count.shape:
            raise ValueError(
                f"channel count changed from {self.count.shape[0]} to {fields[0].shape[0]}: a layer's "
                "outputs must keep the same number of channels (set its layout explicitly)"
            )
        if self._native_merge is not None and fields[0].is_cpu:
            self._native_merge(self._np_state, tuple(t.contiguous().numpy() for t in fields))
            return
        dev = self.count.device
        part = {f: t if t.device == dev else t.to(dev) for f, t in zip(self._FIELDS, fields, strict=True)}
        self.count, self.mean, self.m2 = chan_combine(
            self.count, self.mean, self.m2, part["count"], part["mean"], part["m2"]
        )
        self.min = torch.minimum(self.min, part["min"])
        self.max = torch.maximum(self.max, part["max"])
        for f in ("zeros", "above", "nan", "inf"):
            setattr(self, f, getattr(self, f) + part[f])
        self._views()

    def __getstate__(self) -> dict[str, Any]:
        """For copy and pickle: without the NumPy views, which would be copied apart from the tensors."""
        return {**self.__dict__, "_np_state": None, "_native_merge": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.count is not None:
            self._views()  # views of this copy's own tensors

    def _views(self) -> None:
        """NumPy views of the CPU state (the native merge updates them, hence the tensors, in place), and
        that merge: looked up here, each time the state tensors are made, rather than per update."""
        native = state_kernels(self.count.device, self.backend) if self.count.is_cpu else None
        self._np_state = tuple(t.numpy() for t in self._fields(self)) if self.count.is_cpu else None
        self._native_merge = None if native is None else native.moments_merge

    @property
    def variance(self) -> torch.Tensor:
        """Population variance per channel (NaN where a channel has no finite value)."""
        return self.m2 / self.count.to(torch.float64)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"thresholds": list(self.thresholds)}
        if self.count is not None:
            # copies: the state is updated in place on CPU, a snapshot must not follow it
            state.update({f: getattr(self, f).detach().to("cpu", copy=True) for f in self._FIELDS})
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        acc = cls(thresholds=state["thresholds"])
        if "count" in state:
            for f in cls._FIELDS:  # own, contiguous copies in the state's dtypes (updated in place later)
                dtype = torch.float64 if f in cls._FLOATS else torch.int64
                setattr(acc, f, torch.as_tensor(state[f]).to(dtype).clone(memory_format=torch.contiguous_format))
            acc._views()
        return acc
