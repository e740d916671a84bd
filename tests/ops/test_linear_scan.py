"""``layerscope.ops.linear_scan`` against a sequential float64 NumPy loop (values and adjoint
gradients), gradcheck, half precision, thread counts, the log-space method and the failure paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels._reference import (
    NATIVE_BUILT,
    needs_native,
    scan_grads_reference,
    scan_reference,
)  # tests/kernels
from layerscope import ConfigError, kernels
from layerscope.ops import linear_scan, linear_scan_log, linear_scan_sequential

CPU_BACKENDS = ["torch", *(["native"] if NATIVE_BUILT else [])]
F64 = torch.float64


def coefficients(kind: str, shape, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(*shape, generator=gen, dtype=F64)
    return {
        "zero": torch.zeros(*shape, dtype=F64),
        "negative": -(0.2 + 0.75 * u),
        "mixed": 2.2 * u - 1.1,  # a < 0 and |a| > 1 (short sequences: no overflow)
        "stable": 0.5 + 0.49 * u,
    }[kind]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "kind,t", [("zero", 17), ("negative", 33), ("mixed", 40), ("stable", 5000), ("stable", 1)]
)
@pytest.mark.parametrize("with_h0", [False, True])
def test_values_and_gradients_match_the_sequential_loop(backend, kind, t, with_h0):
    a = coefficients(kind, (3, t, 5))
    b = torch.randn(3, t, 5, dtype=F64)
    h0 = torch.randn(3, 5, dtype=F64) if with_h0 else None
    g = torch.randn(3, t, 5, dtype=F64)
    want = scan_reference(a.numpy(), b.numpy(), None if h0 is None else h0.numpy())
    leaves = [a.requires_grad_(), b.requires_grad_()] + ([h0.requires_grad_()] if with_h0 else [])
    h = linear_scan(a, b, h0, backend=backend)
    np.testing.assert_allclose(h.detach().numpy(), want, rtol=1e-11, atol=1e-11)
    grads = torch.autograd.grad(h, leaves, g)
    ref = scan_grads_reference(
        a.detach().numpy(), want, None if h0 is None else h0.detach().numpy(), g.numpy()
    )
    for got, expected in zip(grads, ref, strict=False):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


@needs_native
@pytest.mark.parametrize("shape", [(1, 4000, 1), (1, 1000, 3), (2, 300, 1)])
def test_native_time_chunked_path_matches(shape):
    # B·D smaller than the thread count: the time axis is cut into chunks (three-phase scan)
    a = coefficients("stable", shape, seed=1)
    a[:, 100] = 0.0  # a reset inside a chunk
    b, g, h0 = (
        torch.randn(*shape, dtype=F64),
        torch.randn(*shape, dtype=F64),
        torch.randn(shape[0], shape[2], dtype=F64),
    )
    old = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        a.requires_grad_(), b.requires_grad_(), h0.requires_grad_()
        h = linear_scan(a, b, h0, backend="native")
        grads = torch.autograd.grad(h, (a, b, h0), g)
    finally:
        torch.set_num_threads(old)
    want = scan_reference(a.detach().numpy(), b.detach().numpy(), h0.detach().numpy())
    np.testing.assert_allclose(h.detach().numpy(), want, rtol=1e-11, atol=1e-11)
    ref = scan_grads_reference(a.detach().numpy(), want, h0.detach().numpy(), g.numpy())
    for got, expected in zip(grads, ref, strict=False):
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("t", [6, 150])
def test_gradcheck_float64(backend, t):
    a = (coefficients("mixed", (2, t, 2), seed=3) * 0.8).requires_grad_()
    b = torch.randn(2, t, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 2, dtype=F64, requires_grad=True)
    old = torch.get_num_threads()
    torch.set_num_threads(4)  # with native: t = 150 takes the time-chunked path
    try:
        assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, backend=backend), (a, b, h0))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_time_dim_and_broadcasting(backend):
    a = 0.9 * torch.rand(7, 1, 3, dtype=F64)  # [T, 1, C]: broadcast over the batch
    b = torch.randn(7, 4, 3, dtype=F64)  # [T, B, C], time first
    h0 = torch.randn(3, dtype=F64)  # broadcast over B
    h = linear_scan(a, b, h0, dim=0, backend=backend)
    want = scan_reference(
        a.expand(7, 4, 3).permute(1, 0, 2).numpy(), b.permute(1, 0, 2).numpy(), h0.expand(4, 3).numpy()
    ).transpose(1, 0, 2)
    np.testing.assert_allclose(h.numpy(), want, rtol=1e-12, atol=1e-12)
    x = torch.randn(2, 3, 4, 5, dtype=F64)  # 4-D, time at dim -1
    got = linear_scan(torch.full_like(x, 0.5), x, dim=-1, backend=backend)
    ref = scan_reference(np.full((24, 5, 1), 0.5), x.reshape(24, 5, 1).numpy(), None)  # B = 2·3·4, D = 1
    np.testing.assert_allclose(got.numpy(), ref.reshape(2, 3, 4, 5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_accumulate_in_float32(backend, dtype):
    a = (0.8 + 0.19 * torch.rand(2, 3000, 4)).to(dtype).requires_grad_()
    b = torch.randn(2, 3000, 4).to(dtype).requires_grad_()
    h = linear_scan(a, b, backend=backend)
    assert h.dtype == dtype
    exact = scan_reference(a.detach().double().numpy(), b.detach().double().numpy(), None)
    # fp32 accumulation: the result is the exact one rounded once to dtype (half an ulp), up to
    # float32 noise; accumulating in dtype would be off by many ulps.
    half_ulp = torch.finfo(dtype).eps / 2
    err = np.abs(h.detach().double().numpy() - exact)
    assert np.all(err <= half_ulp * np.abs(exact) + 1e-5 * np.abs(exact).max())
    ga, gb = torch.autograd.grad(h.float().sum(), (a, b))
    assert ga.dtype == gb.dtype == dtype and torch.isfinite(ga).all()


@needs_native
def test_native_thread_counts_agree():
    a, b = coefficients("stable", (4, 2000, 300), seed=5).float(), torch.randn(4, 2000, 300)
    old = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 8):
            torch.set_num_threads(threads)
            runs.append(linear_scan(a, b, backend="native"))
    finally:
        torch.set_num_threads(old)
    for r in runs[1:]:
        torch.testing.assert_close(r, runs[0], rtol=1e-6, atol=1e-6)


def test_default_backend_is_native_on_cpu_when_built():
    backend, why = kernels.select_backend(torch.device("cpu"), torch.float32, kernel="scan")
    assert backend.name == ("native" if NATIVE_BUILT else "torch"), why


def test_sequential_reference_is_the_loop():
    a, b = coefficients("mixed", (2, 9, 3)), torch.randn(2, 9, 3, dtype=F64)
    np.testing.assert_allclose(
        linear_scan_sequential(a, b).numpy(), scan_reference(a.numpy(), b.numpy(), None)
    )


@pytest.mark.parametrize("with_h0", [False, True])
def test_log_space_method_for_positive_a(with_h0):
    a = coefficients("stable", (2, 500, 3), seed=7).requires_grad_()
    b = torch.randn(2, 500, 3, dtype=F64, requires_grad=True)  # signed b: complex logs
    h0 = torch.randn(2, 3, dtype=F64) if with_h0 else None
    h = linear_scan_log(a, b, h0)
    want = scan_reference(a.detach().numpy(), b.detach().numpy(), None if h0 is None else h0.numpy())
    np.testing.assert_allclose(h.detach().numpy(), want, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(h)
    got = torch.autograd.grad(h, (a, b), g)
    ref = scan_grads_reference(a.detach().numpy(), want, None if h0 is None else h0.numpy(), g.numpy())
    for x, y in zip(got, ref[:2], strict=True):
        np.testing.assert_allclose(x.numpy(), y, rtol=1e-7, atol=1e-7)


def test_log_space_method_rejects_non_positive_a():
    with pytest.raises(ConfigError, match="a > 0"):
        linear_scan_log(torch.tensor([[0.5, 0.0]]), torch.ones(1, 2))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: linear_scan(torch.ones(2, 3), torch.ones(2, 3), dim=2), "dim=2 is out of range"),
        (
            lambda: linear_scan(torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3, dtype=torch.int64)),
            "floating",
        ),
        (lambda: linear_scan(torch.ones(2, 3), torch.ones(2, 3), h0=torch.ones(5)), "does not broadcast"),
        (lambda: linear_scan(torch.tensor(1.0), torch.tensor(2.0)), "at least one"),
        (
            lambda: linear_scan(torch.ones(2, 3), torch.ones(2, 3), backend="fortran"),
            "unknown kernel backend",
        ),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
