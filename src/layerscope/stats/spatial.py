"""Spatial density grid: activation energy (mean of x²) per cell of a coarse grid, per channel.

For an image layer (``axis == "space"``, positions ``(H, W)``) the grid is ``gh × gw`` with
``gh = min(G, H)`` and ``gw = min(G, W)`` (default ``G = 8``); for a sequence layer (``axis == "time"``,
positions ``(T,)``) it is ``min(G, T)`` position bins; a layer without positions (``[N, C]``) has one
cell. Layers with more than two spatial dims (Conv3d) are gridded over their last two dims, the
leading ones summed into each cell.

Cell boundaries partition the positions: along an axis of length ``L`` with ``g`` cells, cell ``i``
holds positions ``floor(i·L/g) … floor((i+1)·L/g) − 1``. These are the *start* indices of
``torch.nn.functional.adaptive_avg_pool2d``; its end indices are ``ceil((i+1)·L/g)``, so adaptive
pooling lets neighbouring cells overlap when ``g`` does not divide ``L``, while here every position
falls in exactly one cell (the cell energies then add up to the layer's total energy). With
``g = min(G, L)`` no cell is empty and no position is repeated to fake resolution.

**Samples per batch** (option ``spatial_samples``, default 8): the sums are taken over at most that
many samples of each batch, evenly spaced (``x[::⌈N/8⌉]``, the samples the spectrum and the covariance
use too), so that the pass over the activation costs a fraction of the forward pass; every batch
contributes, and ``samples`` counts the samples used. The energy is then the mean of x² over those
samples, an unbiased estimate of the mean over all of them; ``spatial_samples=None`` uses every sample
(the exact energy).

State: Σx² per channel and cell (float64 ``[C, gh, gw]``) plus the number of non-finite values per
cell, O(C·G²). The energy of a cell is Σx² over its finite values divided by their number. Sums of
non-negative terms have no cancellation, so plain float64 addition makes ``merge`` exact up to
rounding (the top-k most active channels are chosen at analysis time from the full grid). A batch
whose positions differ from the first batch's (a shorter sequence, another image size) is skipped and
its samples counted in ``skipped``: its cells would not line up with the others.

**Cost per batch.** An all-finite CPU batch (float32/float64) is added by one native call
(csrc/accumulate.cpp: ``Σ x²`` per channel and cell, summed in float64) when the extension is built;
otherwise by torch kernels (squares, one sum over the samples, one over the positions of each cell).
``backend="torch"`` forces the torch code, which is the reference.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch.nn.functional import one_hot as nn_one_hot
from typing_extensions import Self

from .._errors import ConfigError
from ..capture.layout import LayoutView
from ..kernels import ChannelStats
from ..kernels._native_accumulate import all_finite_native, cell_energy_native, cell_energy_plan
from ..kernels._native_accumulate import available as native_available
from ._planned import Planned, batch_key
from ._protocol import ACCUMULATORS
from ._sampling import DEFAULT_SAMPLES, check_samples, sample_step
from ._scratch import Scratch

DEFAULT_GRID = 8
DEFAULT_TOP_K = 4


def cell_edges(length: int, cells: int) -> list[int]:
    """``cells + 1`` edges ``floor(i·length/cells)``: cell ``i`` is ``[edges[i], edges[i+1])``."""
    return [(i * length) // cells for i in range(cells + 1)]


def cell_index(length: int, cells: int) -> torch.Tensor:
    """The cell of each of ``length`` positions (int64 ``[length]``)."""
    # built as a list: a few dozen positions, where torch.repeat_interleave cost more than the first
    # batch's every other setup step (it is called when a layer's plans are made)
    edges = cell_edges(length, cells)
    return torch.tensor([i for i, (a, b) in enumerate(pairwise(edges)) for _ in range(b - a)], dtype=torch.int64)


def grid_shape(spatial_shape: tuple[int, ...], grid: int) -> tuple[int, ...]:
    """``(min(G, H), min(G, W))`` for ≥ 2-D positions, ``(min(G, T),)`` for 1-D, ``()`` for none."""
    if len(spatial_shape) == 0:
        return ()
    return tuple(min(grid, n) for n in spatial_shape[-2:])


@ACCUMULATORS.register("spatial")
class SpatialDensity(Planned):
    """Per-channel activation energy on a coarse spatial grid (see the module docstring)."""

    _TRANSIENT: ClassVar[dict[str, Any]] = {"_plan": ((), None)}

    def __init__(
        self, spatial_grid: int = DEFAULT_GRID, spatial_top_k: int = DEFAULT_TOP_K,
        spatial_samples: int | None = DEFAULT_SAMPLES, backend: str | None = None, **_: Any
    ) -> None:
        if spatial_grid < 1:
            raise ConfigError(f"spatial_grid must be at least 1 (got {spatial_grid})")
        self.grid = int(spatial_grid)
        self.top_k = int(spatial_top_k)
        self.max_samples = check_samples("spatial_samples", spatial_samples)
        self.spatial_shape: tuple[int, ...] | None = None  # every field is None until the first update
        self.energy_sum: torch.Tensor | None = None  # float64 [C, *cells]: Σ x² over finite values
        self.nonfinite: torch.Tensor | None = None  # int64 [C, *cells]
        self.samples = 0
        self.skipped = 0  # samples of batches whose spatial shape differed from the first batch's
        self._pooling: tuple[torch.Tensor, ...] = ()  # pooling matrices, built on first use
        self._plan: tuple[Any, Any] = ((), None)  # (batch key, (reduce, target, cell)): see _plan_for
        self._native = backend != "torch"  # all-finite CPU batches in one native call (csrc/accumulate.cpp)
        self._squares = Scratch()
        # the steady-state native call for one batch shape: None, or (batch key, state it adds to, call,
        # arguments, samples used, the cell index it points to); see _plan_fast
        self._fast: tuple[Any, ...] | None = None


    @property
    def cells(self) -> tuple[int, ...]:
        return grid_shape(self.spatial_shape or (), self.grid)

    def cell_positions(self) -> torch.Tensor:
        """Positions per cell per sample (int64 ``[*cells]``), leading spatial dims included."""
        shape = self.spatial_shape or ()
        lead = math.prod(shape[:-2]) if len(shape) > 2 else 1
        sizes = [torch.tensor([b - a for a, b in pairwise(cell_edges(n, g))])
                 for n, g in zip(shape[-2:], self.cells, strict=True)]
        if not sizes:
            return torch.ones((), dtype=torch.int64)
        out = sizes[0] if len(sizes) == 1 else sizes[0][:, None] * sizes[1][None, :]
        return out * lead

    def update(self, view: LayoutView, reduced: ChannelStats) -> None:
        fast = self._planned(view)  # the usual batch: one native call, no view and no torch op
        if fast is not None and all_finite_native(reduced):
            fast[2](view.data.data_ptr(), *fast[3])
            self.samples += fast[4]
            return
        self._update_general(view, reduced)
        if self._native and self.energy_sum is not None:  # plan again after a batch that did not fit
            self._replan(view)

    def _holds(self, fast: tuple[Any, ...]) -> bool:
        return fast[1] is self.energy_sum

    def _plan_fast(self, view: LayoutView) -> tuple[Any, ...] | None:
        """The native call of :meth:`_update_general` with its arguments fixed for batches like
        ``view.data`` (the samples used, ``x[::step]``, start where ``x`` does: no view per batch), and the
        state it adds to (checked by identity on each batch: a merge or a restored state may replace it).
        A batch takes it when it has the same shape, strides, dtype and layout and is all finite. None
        when it cannot run (the general path then serves every batch)."""
        data = view.data
        if (tuple(view.spatial_shape) != self.spatial_shape or data.device.type != "cpu"
                or data.dtype not in (torch.float32, torch.float64)):
            return None
        cell = self._native_cells()
        target = self.energy_sum.view(self.energy_sum.shape[0], -1)  # (C, cells): a view of the contiguous state
        step = sample_step(data.shape[0], self.max_samples)
        plan = cell_energy_plan(data, step, view.channels_last, cell, target)
        if plan is None or not self.energy_sum.is_contiguous():
            return None
        return (batch_key(view), self.energy_sum, *plan,
                -(-data.shape[0] // step), cell)

    def _update_general(self, view: LayoutView, reduced: ChannelStats) -> None:
        if self.spatial_shape is None:
            self.spatial_shape = tuple(view.spatial_shape)
        elif tuple(view.spatial_shape) != self.spatial_shape:  # a shorter sequence: the cells would not align
            self.skipped += view.num_samples
            return
        step = sample_step(view.num_samples, self.max_samples)
        data = view.data[::step] if step > 1 else view.data  # (n, C, S) or (n, S, C): the samples used
        if data.dtype in (torch.float16, torch.bfloat16):  # x² of a half overflows past |x| ≈ 256
            data = data.float()
        if all_finite_native(reduced) if self._native else reduced.all_finite():
            if (self.energy_sum is None and self._native and data.device.type == "cpu"
                    and data.dtype in (torch.float32, torch.float64) and native_available()):
                # the first batch: a zero state, so that it takes the native call as well (no torch
                # kernels to set up, and the same float64 sums as every later batch)
                cells = (view.num_channels, *self.cells)
                self.energy_sum = torch.zeros(cells, dtype=torch.float64)
                self.nonfinite = torch.zeros(cells, dtype=torch.int64)
            key = (tuple(data.shape), data.dtype, data.device, view.channels_last)
            if self._plan[0] != key:
                self._plan = (key, self._plan_for(view, data))
            reduce, target, cell = self._plan[1]
            if cell is not None and cell_energy_native(data, view.channels_last, cell, target):
                self.samples += data.shape[0]  # one native call added the batch's cell sums
                return
            sq = torch.mul(data, data, out=self._squares.get(key[0], data.dtype, data.device))
            if target is None:  # the first batch: set up the state (and plan again, with it)
                self._absorb(reduce(sq), None, data.shape[0])
                self._plan = (key, self._plan_for(view, data))
            else:
                self.energy_sum.add_(reduce(sq))  # float64 state += the batch's cell sums
                self.samples += data.shape[0]
            return
        finite = torch.isfinite(data)
        sq = torch.where(finite, data.square(), 0.0)
        bad = self._pool(self._sum_over_samples(view, (~finite).to(data.dtype))).round().long()
        self._absorb(self._pool(self._sum_over_samples(view, sq)), bad, data.shape[0])

    def _plan_for(self, view: LayoutView, data: torch.Tensor) -> tuple[Any, torch.Tensor | None, Any]:
        """How an all-finite batch of this shape is summed into cells: ``(reduce, target, cell)``,
        ``reduce`` mapping the squares to the batch's cell sums (torch), ``target`` the state they are
        added to (None before the state exists) and ``cell`` the int32 cell of each position for the
        native kernel (one call: squares and sums; None when it cannot run). The torch path: for equal
        cells (every grid here but a few image sizes) one sum over the samples (a contiguous leading
        axis) and one over the positions of each cell, in a view; else the pooling matrices of
        :meth:`_pool`."""
        shape, cells = tuple(self.spatial_shape or ()), self.cells
        positions = shape[-2:]
        target = self.energy_sum
        cell = None
        if (target is not None and self._native and data.device.type == "cpu"
                and data.dtype in (torch.float32, torch.float64) and native_available()):
            cell = self._native_cells()
            target = target.view(target.shape[0], -1)  # (C, cells): a view of the contiguous state
        if not all(n % g == 0 for n, g in zip(positions, cells, strict=True)):
            return (lambda sq: self._pool(self._sum_over_samples(view, sq))), target, cell
        lead = math.prod(shape[:-2]) if len(shape) > 2 else 1
        split = [lead] + [d for n, g in zip(positions, cells, strict=True) for d in (g, n // g)]
        summed = tuple(i for i in range(0, len(split), 2) if split[i] > 1)  # the lead and within-cell axes
        c = view.num_channels
        if view.channels_last:  # (S, C) after the sum over samples: cells come out (*cells, C)
            split = [*split, c]
        else:
            split, summed = [c, *split], tuple(i + 1 for i in summed)

        order = (len(cells), *range(len(cells)))  # (*cells, C) -> (C, *cells)

        def reduce(sq: torch.Tensor) -> torch.Tensor:  # -> (C, *cells), a transposed view if channels last
            s = sq.sum(0).view(split)
            s = s.sum(summed) if summed else s
            return s.view(*cells, c).permute(order) if view.channels_last else s.view(c, *cells)

        return reduce, target, cell

    def _native_cells(self) -> torch.Tensor:
        """:meth:`_cell_of_position` as int32 for the native kernel, made once per spatial shape (the
        first batch plans twice: for its own call and for the steady state)."""
        shape = self.spatial_shape
        cached = self.__dict__.get("_cells_int32")
        if cached is None or cached[0] != shape:
            cached = (shape, self._cell_of_position().to(torch.int32))
            self._cells_int32 = cached
        return cached[1]

    def _cell_of_position(self) -> torch.Tensor:
        """The flat cell index of each flattened position (int64 ``[S]``; leading spatial dims included)."""
        shape, cells = tuple(self.spatial_shape or ()), self.cells
        if not shape:
            return torch.zeros(1, dtype=torch.int64)
        idx = [cell_index(n, g) for n, g in zip(shape[-2:], cells, strict=True)]
        flat = idx[0] if len(idx) == 1 else (idx[0][:, None] * cells[1] + idx[1][None, :]).flatten()
        return flat.repeat(math.prod(shape[:-2]) if len(shape) > 2 else 1)

    def _sum_over_samples(self, view: LayoutView, values: torch.Tensor) -> torch.Tensor:
        """``values`` shaped like (the samples used of) ``view.data``, summed over samples: ``(C, [H,] W)``
        in ``values``' dtype (the state adds it in float64)."""
        s = values.sum(0)  # (C, S) or (S, C)
        s = s.t() if view.channels_last else s  # (C, S), a view
        shape = view.spatial_shape
        if len(shape) > 2:  # (C, D…·H·W) -> (C, H, W): the leading spatial dims go into each cell
            return s.reshape(view.num_channels, -1, *shape[-2:]).sum(1)
        return s.view(view.num_channels, *shape)

    def _check_shape(self, spatial_shape: tuple[int, ...]) -> None:
        if self.spatial_shape is None:
            self.spatial_shape = tuple(spatial_shape)
        elif tuple(spatial_shape) != self.spatial_shape:
            raise ValueError(
                f"cannot merge spatial grids over positions {tuple(spatial_shape)} into grids over "
                f"{self.spatial_shape}: the cells would not align"
            )

    def _pool(self, per_position: torch.Tensor) -> torch.Tensor:
        """Sum ``(C, [H,] W)`` positions into cells: ``(C, *cells)``, as ``P_h · X · P_wᵀ`` with 0/1
        pooling matrices ``P [cells, positions]`` (a reshape when the cells are equal; nothing when
        every cell is one position)."""
        positions = tuple((self.spatial_shape or ())[-2:])
        cells = self.cells
        if cells == positions:
            return per_position
        if all(n % g == 0 for n, g in zip(positions, cells, strict=True)):  # equal cells: a reshape
            split = [d for n, g in zip(positions, cells, strict=True) for d in (g, n // g)]
            summed = tuple(range(2, 2 + len(split), 2))
            return per_position.view(per_position.shape[0], *split).sum(summed)
        if (len(self._pooling) != len(cells) or self._pooling[0].device != per_position.device
                or self._pooling[0].dtype != per_position.dtype):
            self._pooling = tuple(
                nn_one_hot(cell_index(n, g), g).T.to(device=per_position.device, dtype=per_position.dtype)
                for n, g in zip(positions, cells, strict=True)
            )
        if len(self._pooling) == 1:
            return per_position @ self._pooling[0].T  # (C, T) @ (T, G) -> (C, G)
        p_h, p_w = self._pooling
        return p_h @ per_position @ p_w.T  # (gh, H) @ (C, H, W) @ (W, gw) -> (C, gh, gw)

    def _absorb(self, energy_sum: torch.Tensor, nonfinite: torch.Tensor | None, samples: int) -> None:
        if self.energy_sum is None:
            self.energy_sum = energy_sum.to(torch.float64, copy=True, memory_format=torch.contiguous_format)
            self.nonfinite = torch.zeros(energy_sum.shape, dtype=torch.int64, device=energy_sum.device)
        elif energy_sum.shape != self.energy_sum.shape:
            raise ValueError(
                f"channel count changed from {self.energy_sum.shape[0]} to {energy_sum.shape[0]}: a layer's "
                "outputs must keep the same number of channels (set its layout explicitly)"
            )
        else:
            self.energy_sum += energy_sum.to(self.energy_sum.device)  # (a merge's may be elsewhere) in float64
        if nonfinite is not None:
            self.nonfinite += nonfinite.to(self.nonfinite.device)
        self.samples += samples

    def merge(self, other: Self) -> None:
        if other.grid != self.grid:
            raise ValueError(f"cannot merge a spatial grid of {other.grid} into one of {self.grid}")
        if other.max_samples != self.max_samples:
            raise ValueError(f"cannot merge a spatial grid of spatial_samples={other.max_samples} per batch into "
                             f"one of spatial_samples={self.max_samples}: use the same option")
        if other.energy_sum is None:
            return
        self._check_shape(other.spatial_shape or ())
        self.skipped += other.skipped
        self._absorb(other.energy_sum, other.nonfinite, other.samples)

    def energy(self) -> torch.Tensor:
        """Mean of x² over the finite values of each channel and cell (float64 ``[C, *cells]``)."""
        finite = self.samples * self.cell_positions().to(self.nonfinite.device) - self.nonfinite
        return self.energy_sum / finite.to(torch.float64)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"grid": self.grid, "top_k": self.top_k, "spatial_samples": self.max_samples,
                                 "samples": self.samples, "skipped": self.skipped}
        if self.energy_sum is not None:
            state.update(spatial_shape=list(self.spatial_shape or ()),
                         energy_sum=self.energy_sum.detach().cpu().clone(),  # copies: updated in place
                         nonfinite=self.nonfinite.detach().cpu().clone())
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        # states saved before the option existed used every sample
        acc = cls(spatial_grid=state["grid"], spatial_top_k=state["top_k"],
                  spatial_samples=state.get("spatial_samples"))
        acc.samples, acc.skipped = int(state["samples"]), int(state.get("skipped", 0))
        if "energy_sum" in state:
            acc.spatial_shape = tuple(int(n) for n in state["spatial_shape"])
            acc.energy_sum = torch.as_tensor(state["energy_sum"], dtype=torch.float64).clone()
            acc.nonfinite = torch.as_tensor(state["nonfinite"], dtype=torch.int64).clone()
        return acc
