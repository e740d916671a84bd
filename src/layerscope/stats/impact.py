"""First-order Taylor impact of each channel on the loss (the basis of ζ-scores).

Zeroing channel ``c`` of sample ``n`` changes that sample's loss by, to first order,

    ΔL_n(c) ≈ −t_n(c),      t_n(c) = Σ_positions a_n,c,s · ∂L/∂a_n,c,s

(Molchanov, Tyree, Karras, Aila & Kautz, 2017, "Pruning Convolutional Neural Networks for Resource
Efficient Inference", eq. 8, which averages over positions instead of summing — a constant factor
within a layer; Molchanov, Mallya, Tyree, Frosio & Kautz, 2019, "Importance Estimation for Neural
Network Pruning", CVPR). The impact of a channel is ``mean_n |t_n(c)|``; the signed mean
``mean_n t_n(c)`` (≈ −the loss change of removing the channel from every sample) and ``Σ t²`` are kept
too. ``t_n`` is per *sample* only when the loss is a sum of per-sample terms (the driver
:func:`layerscope._impact.impact_pass` uses sum reductions) and the model is in eval mode (no
batch-norm coupling between samples).

The statistic needs gradients: ``needs_grad = True`` makes the Probe call ``update_grad`` from a tensor
hook during ``backward``; ``update`` does nothing. State: float64 sums ``[C]`` and a sample count, so
``merge`` is an addition.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Self

from ..capture.layout import LayoutView
from ..kernels import ChannelStats
from ._protocol import ACCUMULATORS

_FIELDS = ("abs_sum", "sum", "sq_sum")


@ACCUMULATORS.register("impact")
class TaylorImpact:
    """Per-channel sums of ``|t_n|``, ``t_n`` and ``t_n²`` over the samples seen in backward passes."""

    needs_grad = True

    def __init__(self, **_: Any) -> None:
        self.samples = 0
        self.abs_sum: torch.Tensor | None = None  # float64 [C]; every field None until the first gradient
        self.sum: torch.Tensor | None = None
        self.sq_sum: torch.Tensor | None = None

    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        return None  # the forward pass alone says nothing about the loss

    def update_grad(self, view: LayoutView, grad: LayoutView) -> None:
        a, g = view.ncs(), grad.ncs()  # (N, C, S) each
        if a.shape != g.shape:
            raise ValueError(f"activation {tuple(a.shape)} and gradient {tuple(g.shape)} views differ")
        t = (a * g).sum(2, dtype=torch.float64)  # (N, C, S) -> (N, C): Σ_s a·∂L/∂a, summed in float64
        self._absorb({"abs_sum": t.abs().sum(0), "sum": t.sum(0), "sq_sum": t.square().sum(0)}, t.shape[0])

    def _absorb(self, part: dict[str, torch.Tensor], samples: int) -> None:
        if self.abs_sum is None:
            for f in _FIELDS:
                setattr(self, f, part[f].clone())
        elif part["sum"].shape != self.sum.shape:
            raise ValueError(
                f"channel count changed from {self.sum.shape[0]} to {part['sum'].shape[0]}: a layer's "
                "outputs must keep the same number of channels (set its layout explicitly)"
            )
        else:
            for f in _FIELDS:
                setattr(self, f, getattr(self, f) + part[f].to(self.sum.device))
        self.samples += samples

    def merge(self, other: Self) -> None:
        if other.abs_sum is not None:
            self._absorb({f: getattr(other, f) for f in _FIELDS}, other.samples)

    def impact(self) -> torch.Tensor:
        """``mean_n |Σ_s a·∂L/∂a|`` per channel (float64 ``[C]``)."""
        return self.abs_sum / max(self.samples, 1)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"samples": self.samples}
        if self.abs_sum is not None:
            state.update({f: getattr(self, f).detach().to("cpu", copy=True) for f in _FIELDS})
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        acc = cls()
        acc.samples = int(state["samples"])
        if "abs_sum" in state:
            for f in _FIELDS:
                setattr(acc, f, torch.as_tensor(state[f], dtype=torch.float64))
        return acc
