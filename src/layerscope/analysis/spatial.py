"""Spatial modality per layer: density grids, ζ impact scores, channel correlation, connection strengths.

Thresholds (module constants, documented in docs/spatial.md):

- ``REDUNDANT_R = 0.95``: two channels whose Pearson correlation has ``|r| > 0.95`` are a redundant pair.
- ``ZETA_LOW = -1.0``: channels whose impact is more than one standard deviation below the layer's mean
  (ζ < −1) are listed as low-impact.
- A channel is *constant* when its variance is below float32 resolution of its mean,
  ``var ≤ (2⁻²³·|mean|)²`` (exactly 0 for a channel that is always 0); constant channels have no
  correlation and are left out of the effective rank and the redundant pairs.

Effective rank is the participation ratio (Gao et al., 2017, "A theory of multineuronal dimensionality,
dynamics and measurement"; Recanatesi et al., 2019) of the eigenvalues λ of the *correlation* matrix
of the non-constant channels, ``PR = (Σλ)² / Σλ² = k² / ‖R‖_F²`` (trace R = k), which is between 1 (all
channels move together) and k (uncorrelated channels), and does not change when a channel is rescaled.
The participation ratio of the covariance eigenvalues, which a few high-variance channels dominate, is
``effective_rank_covariance``.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import torch

from . import LAYER_ANALYSES, MODEL_ANALYSES

REDUNDANT_R = 0.95
ZETA_LOW = -1.0
TOP_CONNECTIONS = 20
MAX_PAIRS = 100  # redundant pairs listed (all are counted)
HEATMAP_CHANNELS = 64  # the correlation matrix is emitted in full up to this many channels
HEATMAP_DECIMALS = 3  # … rounded for display (the statistics above use the full values)
MAX_EIGENVALUES = 128
_F32_EPS = 2.0**-23


def _tolist(t: torch.Tensor) -> Any:
    return t.detach().cpu().tolist()


def channel_count(meta: dict[str, Any]) -> int | None:
    """The layer's channel count from its meta (output shape and channel axis); None if unknown."""
    shape = meta.get("shape") or []
    if not shape:
        return None
    return int(shape[-1] if meta.get("channels_last") else shape[0])


# -- density grid ----------------------------------------------------------------------------------
def normalised_entropy(grid: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each grid (over its last ``d`` dims as one distribution) / log(cells): 1 =
    energy spread evenly, 0 = all in one cell. ``grid`` is ``[..., cells]`` flattened; NaN if empty."""
    total = grid.sum(-1, keepdim=True)
    p = grid / total
    h = -(p * torch.log(p.clamp(min=1e-300))).sum(-1)
    return h / math.log(grid.shape[-1]) if grid.shape[-1] > 1 else torch.full_like(h, float("nan"))


def centre_of_mass(grid: torch.Tensor) -> list[float]:
    """Energy-weighted mean cell centre in [0, 1] coordinates per grid axis (row, then column)."""
    out = []
    total = float(grid.sum())
    for axis, n in enumerate(grid.shape):
        centres = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        marginal = grid.sum(dim=tuple(d for d in range(grid.dim()) if d != axis))
        out.append(float((marginal * centres).sum()) / total if total > 0 else float("nan"))
    return out


@LAYER_ANALYSES.register("spatial")
def summarize_spatial(acc: Any, meta: dict[str, Any]) -> dict[str, Any]:
    if acc.energy_sum is None:
        return {"samples": 0, "grid": acc.grid, "skipped": acc.skipped}
    energy = acc.energy().cpu()  # (C, *cells)
    channels = energy.shape[0]
    flat = energy.reshape(channels, -1)  # (C, cells)
    layer_grid = energy.sum(0)  # (*cells): Σ over channels of the mean x² per cell
    per_energy = acc.energy_sum.cpu().reshape(channels, -1).sum(1) / (
        acc.samples * int(acc.cell_positions().sum()) - acc.nonfinite.cpu().reshape(channels, -1).sum(1))
    top = torch.argsort(per_energy, descending=True, stable=True)[: max(acc.top_k, 0)]
    has_grid = flat.shape[1] > 1
    out: dict[str, Any] = {
        "samples": acc.samples,
        "samples_per_batch": acc.max_samples,  # the budget (None: every sample)
        "skipped": acc.skipped,
        "grid": acc.grid,
        "grid_shape": list(acc.cells),
        "spatial_shape": list(acc.spatial_shape or ()),
        "layer_energy": float(per_energy.mean()),
        "layer_grid": _tolist(layer_grid) if has_grid else None,
        "spatial_entropy": float(normalised_entropy(layer_grid.reshape(1, -1))[0]) if has_grid else None,
        "concentration": float(layer_grid.max() / layer_grid.mean()) if has_grid else None,
        "centre_of_mass": centre_of_mass(layer_grid) if has_grid else None,
        "nonfinite": int(acc.nonfinite.sum()),
        "top_channels": [
            {"channel": int(c), "energy": float(per_energy[c]),
             "grid": _tolist(energy[c]) if has_grid else None}
            for c in top
        ],
        "per_channel": {"energy": _tolist(per_energy)},
    }
    if has_grid:
        out["per_channel"]["spatial_entropy"] = _tolist(normalised_entropy(flat))
        out["per_channel"]["concentration"] = _tolist(flat.max(1).values / flat.mean(1))
    return out


# -- ζ impact --------------------------------------------------------------------------------------
def zscore(values: torch.Tensor) -> torch.Tensor:
    """``(v − mean) / std`` over the layer's channels (population std); NaN when std is 0."""
    std = values.std(correction=0)
    if not bool(std > 0):
        return torch.full_like(values, float("nan"))
    return (values - values.mean()) / std


@LAYER_ANALYSES.register("impact")
def summarize_impact(acc: Any, meta: dict[str, Any]) -> dict[str, Any]:
    if acc.abs_sum is None or acc.samples == 0:
        return {"samples": 0, "note": "no gradient reached this layer: Taylor impact needs a backward pass "
                                      "(layerscope._impact.impact_pass)"}
    n = acc.samples
    impact = acc.impact().cpu()
    signed = acc.sum.cpu() / n
    std = (acc.sq_sum.cpu() / n - signed.square()).clamp(min=0).sqrt()
    zeta = zscore(impact)
    low = torch.nonzero(zeta < ZETA_LOW).flatten()
    return {
        "samples": n,
        "method": "taylor-fo: mean over samples of |sum over positions of a * dL/da| (Molchanov et al. 2017)",
        "mean_impact": float(impact.mean()),
        "total_impact": float(impact.sum()),
        "max_impact": float(impact.max()),
        "zeta_low_threshold": ZETA_LOW,
        "low_impact_channels": _tolist(low),
        "per_channel": {"impact": _tolist(impact), "zeta": _tolist(zeta), "signed": _tolist(signed),
                        "std": _tolist(std)},
    }


# -- channel covariance ------------------------------------------------------------------------------
def correlation_from_covariance(cov: torch.Tensor) -> torch.Tensor:
    """``R = D⁻¹ Σ D⁻¹`` with ``D = diag(σ)``, clipped to [−1, 1], unit diagonal (float64)."""
    sd = cov.diagonal().clamp(min=0).sqrt()
    r = cov / torch.outer(sd, sd)
    r = r.clamp(-1.0, 1.0)
    r.fill_diagonal_(1.0)
    return r


def participation_ratio(matrix: torch.Tensor) -> float:
    """``(Σλ)² / Σλ²`` of a symmetric matrix's eigenvalues, as ``(tr A)² / ‖A‖_F²`` (no eigensolver);
    NaN for an empty or all-zero matrix."""
    s2 = float(matrix.square().sum())
    return float(matrix.trace()) ** 2 / s2 if s2 > 0 else float("nan")


def redundant_pairs(r: torch.Tensor, channels: torch.Tensor, threshold: float) -> tuple[int, list[dict]]:
    """Pairs ``a < b`` with ``|r_ab| > threshold``: their number and the ``MAX_PAIRS`` strongest."""
    iu = torch.triu_indices(r.shape[0], r.shape[0], offset=1)
    vals = r[iu[0], iu[1]]
    hit = torch.nonzero(vals.abs() > threshold).flatten()
    order = hit[torch.argsort(vals[hit].abs(), descending=True, stable=True)][:MAX_PAIRS]
    pairs = [{"a": int(channels[iu[0, k]]), "b": int(channels[iu[1, k]]), "r": float(vals[k])} for k in order]
    return int(hit.numel()), pairs


@LAYER_ANALYSES.register("covariance")
def summarize_covariance(acc: Any, meta: dict[str, Any]) -> dict[str, Any]:
    if acc.mean is None or acc.count < 2:
        return {"channels": acc.channels, "observations": acc.count, "samples_per_batch": acc.max_samples}
    cov = acc.covariance().cpu()
    var, mean = cov.diagonal(), acc.mean.cpu()
    index = acc.index.cpu()
    live = var > (_F32_EPS * mean.abs()).square()  # not constant (see module docstring)
    r = correlation_from_covariance(cov[live][:, live])
    live_channels = index[live]
    k = int(live.sum())
    eig = torch.linalg.eigvalsh(r).flip(0) if k else torch.zeros(0, dtype=torch.float64)
    n_pairs, pairs = redundant_pairs(r, live_channels, REDUNDANT_R)
    off = r - torch.eye(k, dtype=r.dtype)
    abs_off = off.abs()
    per_mean = torch.full((acc.channels,), float("nan"), dtype=torch.float64)
    per_max = per_mean.clone()
    per_var = per_mean.clone()
    per_var[index] = var
    if k > 1:
        per_mean[live_channels] = abs_off.sum(1) / (k - 1)
        per_max[live_channels] = abs_off.max(1).values
    shown = torch.argsort(var[live], descending=True, stable=True)[:HEATMAP_CHANNELS].sort().values
    out: dict[str, Any] = {
        "channels": acc.channels,
        "tracked": int(index.numel()),
        "capped": bool(index.numel() < acc.channels),
        "observations": acc.count,
        "samples_per_batch": acc.max_samples,  # whose rows are observed (None: every row)
        "dropped": acc.dropped,
        "constant_channels": int((~live).sum()),
        "effective_rank": participation_ratio(r),
        "effective_rank_fraction": participation_ratio(r) / k if k else float("nan"),
        "effective_rank_covariance": participation_ratio(cov),
        "eigenvalues": _tolist(eig[:MAX_EIGENVALUES]),
        "mean_abs_correlation": float(abs_off.sum() / (k * (k - 1))) if k > 1 else float("nan"),
        "redundant_threshold": REDUNDANT_R,
        "redundant_pair_count": n_pairs,
        "redundant_pairs": pairs,
        "correlation_channels": _tolist(live_channels[shown]),
        "correlation": _tolist(r[shown][:, shown].round(decimals=HEATMAP_DECIMALS)),
        "per_channel": {"variance": _tolist(per_var), "mean_abs_correlation": _tolist(per_mean),
                        "max_abs_correlation": _tolist(per_max)},
    }
    if out["capped"]:
        out["tracked_channels"] = _tolist(index)
    return out


# -- connection strengths ----------------------------------------------------------------------------
@LAYER_ANALYSES.register("connectivity")
def summarize_connectivity(acc: Any, meta: dict[str, Any]) -> dict[str, Any]:
    if acc.shape is None:
        return {"available": False, "note": "the layer has no weight of dim >= 2"}
    n_out, n_in = acc.shape
    channels = channel_count(meta)
    top, top_index = acc.top.cpu(), acc.top_index.cpu()
    out: dict[str, Any] = {
        "available": True,
        "shape": [n_out, n_in],
        "kind": "conv" if acc.kernel_size else "linear",
        "kernel_size": list(acc.kernel_size),
        "orientation_ok": channels is None or channels == n_out,
        "total": float(acc.total),
        "mean": float(acc.total) / (n_out * n_in),
        "max": float(acc.max),
        "strongest": [{"out": int(i) // n_in, "in": int(i) % n_in, "strength": float(v)}
                      for v, i in zip(top, top_index, strict=True)],
        "per_channel": {"in_strength": _tolist(acc.out_norm)},  # L2 norm of each output's strengths
        "per_input": {"out_strength": _tolist(acc.in_norm)},
        "strongest_input": {"index": _tolist(acc.best_in_index), "strength": _tolist(acc.best_in)},
        "strongest_output": {"index": _tolist(acc.best_out_index), "strength": _tolist(acc.best_out)},
        "matrix": _tolist(acc.matrix) if acc.matrix is not None else None,
    }
    if not out["orientation_ok"]:
        out["note"] = (f"the weight has {n_out} rows but the layer outputs {channels} channels (a transposed "
                       "convolution or an embedding stores [in, out]): strengths are listed as stored")
    return out


# -- strongest paths between consecutive layers (model level) -----------------------------------------
TOP_PATHS = 10


def _chain(a: dict[str, Any], b: dict[str, Any]) -> int | None:
    """How ``b``'s inputs map onto ``a``'s outputs: ``m`` when input ``j`` of b is output ``j // m`` of a.

    ``m = 1``: the sizes match. ``m > 1``: only from a convolution into a Linear layer, read as a
    channels-first flatten of ``m`` positions per channel (``torch.flatten(x, 1)`` of ``[B, C, H, W]``).
    None: the sizes do not chain.
    """
    a_out, b_in = a["shape"][0], b["shape"][1]
    if a_out == b_in:
        return 1
    if a.get("kind") == "conv" and b.get("kind") == "linear" and a_out and b_in % a_out == 0:
        return b_in // a_out
    return None


def strongest_paths(a: dict[str, Any], b: dict[str, Any], m: int, top: int = TOP_PATHS) -> list[dict]:
    """For each channel ``j`` between the two layers, its strongest path ``i → j → k`` with strength
    ``s_a[j, i] · s_b[k, j']`` (``j'`` the strongest of b's inputs fed by j); the ``top`` strongest."""
    s1 = torch.tensor(a["strongest_input"]["strength"], dtype=torch.float64)  # (a_out,)
    i1 = torch.tensor(a["strongest_input"]["index"])
    s2 = torch.tensor(b["strongest_output"]["strength"], dtype=torch.float64).reshape(-1, m)  # (a_out, m)
    k2 = torch.tensor(b["strongest_output"]["index"]).reshape(-1, m)
    best2 = s2.max(1)  # over the m inputs of b that channel j feeds
    score = s1 * best2.values
    order = torch.argsort(score, descending=True, stable=True)[:top]
    return [{"input": int(i1[j]), "via": int(j), "via_input": int(j * m + best2.indices[j]),
             "output": int(k2[j, best2.indices[j]]), "strength": float(score[j])} for j in order]


@MODEL_ANALYSES.register("connectivity")
def connectivity_paths(layers: dict[str, Any]) -> dict[str, Any]:
    """Strongest paths between consecutive captured layers that have weights, in forward order.

    Consecutive means consecutive in the order the layers first ran, among layers with a
    ``connectivity`` result: a heuristic, not a traced graph (a residual branch is not followed), so a
    pair whose sizes do not chain is listed under ``unchained`` rather than guessed.
    """
    ordered = sorted(layers.values(), key=lambda r: r.meta.get("order", 0))
    weighted = [(r.meta["name"], r.stats["connectivity"]) for r in ordered
                if (r.stats.get("connectivity") or {}).get("available")]
    pairs, unchained = [], []
    for (name_a, a), (name_b, b) in pairwise(weighted):
        m = _chain(a, b)
        if m is None:
            reason = f"{name_a} has {a['shape'][0]} outputs, {name_b} takes {b['shape'][1]} inputs"
            unchained.append({"from": name_a, "to": name_b, "reason": reason})
            continue
        pairs.append({"from": name_a, "to": name_b, "mode": "direct" if m == 1 else f"flatten x{m}",
                      "paths": strongest_paths(a, b, m)})
    if not weighted:
        return {"pairs": [], "unchained": [], "note": "no layer has a connectivity result"}
    return {"pairs": pairs, "unchained": unchained}
