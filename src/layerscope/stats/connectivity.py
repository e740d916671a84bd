"""Connection strengths from a layer's weight (no activation needed), reduced at construction.

The strength of the connection ``in → out`` is the L2 norm of its kernel for a convolution weight
``[out, in/groups, k…]`` and ``|w|`` for a Linear weight ``[out, in]``. Grouped convolutions give the
input index within the group; transposed convolutions and embeddings store their weight ``[in, out]``
(the analysis checks the row count against the layer's channels and says so).

The ``[out, in]`` matrix itself is as large as a Linear weight, so it is reduced at once to what the
analyses use — per output: the L2 norm of its strengths and its strongest input; per input: the same
over outputs; the ``TOP`` strongest connections; sum and maximum — O(out + in) in all. The full matrix
is kept only up to ``MATRIX_MAX`` entries (for a heatmap). No reference to the weight is kept.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import Self

from ..capture.layout import LayoutView
from ..kernels import ChannelStats
from ._protocol import ACCUMULATORS

TOP = 20
MATRIX_MAX = 64 * 64

_FIELDS = ("out_norm", "in_norm", "best_in", "best_in_index", "best_out", "best_out_index",
           "top", "top_index", "total", "max")


def connection_strength(weight: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` strengths: the L2 norm of each kernel (Conv ``[out, in, k…]``) or ``|w|`` (Linear)."""
    w = weight.detach().to(torch.float32)
    if w.dim() == 2:
        return w.abs()
    return torch.linalg.vector_norm(w.flatten(2), dim=2)  # (out, in, k…) -> (out, in)


@ACCUMULATORS.register("connectivity")
class ConnectionStrength:
    """Reduced ``[out, in]`` connection strengths of the layer's weight (see the module docstring)."""

    def __init__(self, weight: torch.Tensor | None = None, **_: Any) -> None:
        self.shape: tuple[int, int] | None = None  # (out, in); None without a weight
        self.kernel_size: tuple[int, ...] = ()
        self.matrix: torch.Tensor | None = None  # float32 [out, in], only when small
        for f in _FIELDS:
            setattr(self, f, None)
        if weight is not None:
            self._reduce(connection_strength(weight))
            self.kernel_size = tuple(weight.shape[2:])

    def _reduce(self, s: torch.Tensor) -> None:
        self.shape = (s.shape[0], s.shape[1])
        self.out_norm = torch.linalg.vector_norm(s, dim=1)  # (out,)
        self.in_norm = torch.linalg.vector_norm(s, dim=0)  # (in,)
        self.best_in, self.best_in_index = s.max(1)  # strongest input of each output
        self.best_out, self.best_out_index = s.max(0)  # strongest output of each input
        self.top, self.top_index = s.flatten().topk(min(TOP, s.numel()))  # flat index out·in_size + in
        self.total = s.sum(dtype=torch.float64)
        self.max = s.max()
        self.matrix = s.clone() if s.numel() <= MATRIX_MAX else None

    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        return None  # the weights say it all; activations are not needed

    def merge(self, other: Self) -> None:
        """Both sides describe the same model's weights: keep one (they must have the same shape)."""
        if other.shape is None:
            return
        if self.shape is None:
            self._copy(other.state_dict())
        elif other.shape != self.shape:
            raise ValueError(f"cannot merge connection strengths of shape {other.shape} into {self.shape}: "
                             "they come from different models")

    def state_dict(self) -> dict[str, Any]:
        if self.shape is None:
            return {}
        state: dict[str, Any] = {f: getattr(self, f).detach().to("cpu", copy=True) for f in _FIELDS}
        state.update(shape=list(self.shape), kernel_size=list(self.kernel_size))
        if self.matrix is not None:
            state["matrix"] = self.matrix.detach().to("cpu", copy=True)
        return state

    def _copy(self, state: dict[str, Any]) -> None:
        self.shape = (int(state["shape"][0]), int(state["shape"][1]))
        self.kernel_size = tuple(int(k) for k in state["kernel_size"])
        for f in _FIELDS:
            setattr(self, f, torch.as_tensor(state[f]).clone())
        self.matrix = torch.as_tensor(state["matrix"]).clone() if "matrix" in state else None

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        acc = cls()
        if "shape" in state:
            acc._copy(state)
        return acc
