"""Triton backend: CUDA tensors when ``import triton`` works (priority 20, after native, before torch).

Under ``TRITON_INTERPRET=1`` the same kernels also run on CPU tensors through Triton's interpreter
(slow; for testing the kernels without a GPU). The kernels live in :mod:`._triton_kernels`, imported
on first use, once per mode (compiled / interpreted).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from types import ModuleType

import torch

from .._optional import has
from ..capture.layout import LayoutView
from . import BACKENDS, Backend
from ._contract import ChannelStats
from ._histogram import dense_flat, histogram_edges
from ._scan import ScanKernels, accumulation_dtype

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_kernel_modules: dict[bool, ModuleType] = {}
_import_error: list[str] = []


def interpreting() -> bool:
    """True when Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _triton_imports() -> str:
    """'' when ``import triton`` works, else why not (checked once)."""
    if not _import_error:
        try:
            import triton  # noqa: F401
        except Exception as exc:  # ImportError, or a broken install raising something else
            _import_error.append(f"import triton failed: {exc}")
        else:
            _import_error.append("")
    return _import_error[0]


def available(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    if not has("triton"):
        return False, "triton not installed (pip install triton)"
    if dtype not in _DTYPES:
        return False, f"dtype {dtype} not supported (float32, float64, float16, bfloat16)"
    if device.type == "cpu" and interpreting():
        failed = _triton_imports()
        return (False, failed) if failed else (True, "Triton interpreter on CPU (TRITON_INTERPRET=1)")
    if device.type != "cuda":
        return (
            False,
            f"tensor on {device.type} (Triton runs CUDA tensors, CPU ones only under TRITON_INTERPRET=1)",
        )
    if not torch.cuda.is_available():
        return False, "CUDA not available"
    failed = _triton_imports()
    return (False, failed) if failed else (True, "Triton kernels on CUDA")


def _kernels() -> ModuleType:
    """The kernel module, decorated for the current mode (Triton reads TRITON_INTERPRET at decoration)."""
    mode = interpreting()
    if mode not in _kernel_modules:
        spec = importlib.util.find_spec(f"{__package__}._triton_kernels")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _kernel_modules[mode] = module
    return _kernel_modules[mode]


def _target_programs(device: torch.device) -> int:
    """Programs worth launching: a few per SM on CUDA, few in the (serial) interpreter."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_pow2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def _pow2(n: int, cap: int) -> int:
    """The power of two ≥ n, at most cap (a block size)."""
    return min(cap, _next_pow2(n))


def _round_down_thresholds(
    thresholds: Sequence[float], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Thresholds in the compute dtype, rounded down: x > t ⇔ x > round_down(t) for x of that dtype."""
    exact = torch.tensor([float(t) for t in thresholds] or [0.0], dtype=torch.float64)
    if dtype == torch.float64:
        return exact.to(device)
    low = exact.to(dtype)
    low = torch.where(low.double() > exact, torch.nextafter(low, torch.tensor(-math.inf, dtype=dtype)), low)
    return low.to(device)


# ---- fused channel reduction ---------------------------------------------------------------------------


def channel_reduce_triton(
    view: LayoutView, thresholds: Sequence[float], split: int | None = None
) -> ChannelStats:
    """Per-(sample, split) partials in one Triton pass, then Chan's multi-way merge in float64 torch ops.

    ``split`` (positions cut per sample) defaults to enough programs for the device.
    """
    x = view.ncs()  # [N, C, S], any strides
    n, c, s = x.shape
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    channels_last = x.stride(1) < x.stride(2)
    block_c = _pow2(c, 64 if channels_last else 16)
    block_s = _pow2(s, 32 if channels_last else 128)
    if split is None:
        blocks = n * _cdiv(c, block_c)
        split = max(1, min(_cdiv(_target_programs(x.device), max(blocks, 1)), _cdiv(s, block_s)))
    chunk = _cdiv(_cdiv(max(s, 1), split), block_s) * block_s
    parts, t = n * split, len(thresholds)
    dev = x.device
    out = {f: torch.empty(parts, c, dtype=torch.int64, device=dev) for f in ("count", "zeros", "nan", "inf")}
    out.update(
        {f: torch.empty(parts, c, dtype=torch.float64, device=dev) for f in ("mean", "m2", "min", "max")}
    )
    above = torch.empty(t, parts, c, dtype=torch.int64, device=dev)
    if parts and c:
        _kernels().channel_partials_kernel[(parts, _cdiv(c, block_c))](
            x,
            _round_down_thresholds(thresholds, compute, dev),
            out["count"],
            out["mean"],
            out["m2"],
            out["min"],
            out["max"],
            out["zeros"],
            out["nan"],
            out["inf"],
            above,
            c,
            s,
            x.stride(0),
            x.stride(1),
            x.stride(2),
            chunk,
            split,
            t,
            parts,
            BLOCK_C=block_c,
            BLOCK_S=block_s,
            T_PAD=_next_pow2(max(t, 1)),
            F64=compute == torch.float64,
        )
    return _merge_partials(out, above, n, split)


def _merge_partials(p: dict[str, torch.Tensor], above: torch.Tensor, n: int, split: int) -> ChannelStats:
    """Chan's formula over P partials (float64): M2 = Σ M2_i + Σ n_i·(mean_i − mean)²."""
    cnt = p["count"].to(torch.float64)  # [P, C]
    count = cnt.sum(0)
    mean = (cnt * p["mean"]).sum(0) / count.clamp(min=1)
    m2 = p["m2"].sum(0) + (cnt * (p["mean"] - mean) ** 2).sum(0)
    c = cnt.shape[1]
    sample_sum = (cnt * p["mean"]).view(n, split, c).sum(1)  # [N, C]
    sample_cnt = cnt.view(n, split, c).sum(1)
    return ChannelStats(
        count=p["count"].sum(0),
        mean=mean,
        m2=m2,
        min=p["min"].amin(0) if cnt.shape[0] else torch.full_like(mean, math.inf),
        max=p["max"].amax(0) if cnt.shape[0] else torch.full_like(mean, -math.inf),
        zeros=p["zeros"].sum(0),
        above=above.sum(1),
        nan=p["nan"].sum(0),
        inf=p["inf"].sum(0),
        sample_mean=sample_sum / sample_cnt,  # NaN where a sample has no finite value
    )


# ---- linear scan ---------------------------------------------------------------------------------------


def _scan_plan(a: torch.Tensor, chunks: int | None) -> tuple[int, int, int]:
    """(BLOCK_D, number of time chunks K, chunk length)."""
    bsz, t, d = a.shape
    block_d = _pow2(d, 128)
    lanes = bsz * _cdiv(d, block_d)
    if chunks is None:
        chunks = max(1, min(_cdiv(_target_programs(a.device), max(lanes, 1)), t // 64))
    chunks = max(1, min(chunks, max(t, 1)))
    return block_d, chunks, _cdiv(max(t, 1), chunks)


def scan_forward_triton(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None, chunks: int | None = None
) -> torch.Tensor:
    bsz, t, d = a.shape
    acc = accumulation_dtype(a.dtype)
    h = torch.empty(bsz, t, d, dtype=acc, device=a.device)
    if h.numel() == 0:
        return h
    block_d, k, chunk = _scan_plan(a, chunks)
    kern, f64 = _kernels(), acc == torch.float64
    lanes = bsz * _cdiv(d, block_d)
    last = torch.empty(k, bsz, d, dtype=acc, device=a.device)
    prod = torch.empty_like(last)
    h0_arg = h0 if h0 is not None else h
    kern.scan_fwd_chunk_kernel[(lanes, k)](
        a, b, h0_arg, h, last, prod, bsz, t, d, chunk, HAS_H0=h0 is not None, BLOCK_D=block_d, F64=f64
    )
    if k > 1:
        kern.scan_fwd_chain_kernel[(_cdiv(bsz * d, 256),)](last, prod, bsz * d, k, BLOCK=256)
        kern.scan_fwd_fix_kernel[(lanes, k - 1)](a, h, last, bsz, t, d, chunk, BLOCK_D=block_d, F64=f64)
    return h


def scan_backward_triton(
    a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, grad_h: torch.Tensor, chunks: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    bsz, t, d = a.shape
    grad_a, grad_b = torch.empty_like(h), torch.empty_like(h)
    if h.numel() == 0:
        return grad_a, grad_b, (torch.zeros_like(h0) if h0 is not None else None)
    block_d, k, chunk = _scan_plan(a, chunks)
    kern, f64 = _kernels(), h.dtype == torch.float64
    lanes = bsz * _cdiv(d, block_d)
    first = torch.empty(k, bsz, d, dtype=h.dtype, device=a.device)
    prod = torch.empty_like(first)
    h0_arg = h0 if h0 is not None else h
    kern.scan_bwd_chunk_kernel[(lanes, k)](
        a,
        h,
        h0_arg,
        grad_h,
        grad_a,
        grad_b,
        first,
        prod,
        bsz,
        t,
        d,
        chunk,
        HAS_H0=h0 is not None,
        FUSED=k == 1,
        BLOCK_D=block_d,
        F64=f64,
    )
    if k > 1:
        kern.scan_bwd_chain_kernel[(_cdiv(bsz * d, 256),)](first, prod, bsz * d, k, BLOCK=256, F64=f64)
        kern.scan_bwd_fix_kernel[(lanes, k)](
            a,
            h,
            h0_arg,
            grad_a,
            grad_b,
            first,
            bsz,
            t,
            d,
            chunk,
            k,
            HAS_H0=h0 is not None,
            BLOCK_D=block_d,
            F64=f64,
        )
    grad_h0 = a[:, 0].to(h.dtype) * grad_b[:, 0] if h0 is not None else None
    return grad_a, grad_b, grad_h0


# ---- histogram -----------------------------------------------------------------------------------------

_HIST_BLOCK = 1024
_HIST_MAX = 1 << 30  # values per launch: int32 counts cannot overflow


def histogram_triton(x: torch.Tensor, bins: int, lo: float, hi: float) -> torch.Tensor:
    flat = dense_flat(x)
    edges = histogram_edges(bins, lo, hi, x.device)
    counts = torch.zeros(bins, dtype=torch.int64, device=x.device)
    for start in range(0, flat.numel(), _HIST_MAX):
        part = flat[start : start + _HIST_MAX]
        c32 = torch.zeros(bins, dtype=torch.int32, device=x.device)
        _kernels().histogram_kernel[(_cdiv(part.numel(), _HIST_BLOCK),)](
            part, edges, c32, part.numel(), lo, hi, bins / (hi - lo), bins, BLOCK=_HIST_BLOCK
        )
        counts += c32
    return counts


BACKENDS.register("triton")(
    Backend(
        "triton",
        available,
        channel_reduce_triton,
        priority=20,
        histogram=histogram_triton,
        scan=ScanKernels(scan_forward_triton, scan_backward_triton),
    )
)
