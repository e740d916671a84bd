"""Triton kernels against the float64 references: on CPU through Triton's interpreter
(TRITON_INTERPRET=1), and on CUDA (``gpu`` marker). Skipped when triton is not installed.

Triton reads TRITON_INTERPRET when it is imported (its own ``@jit`` helpers are built then), so the
interpreter cases run in a subprocess that sets it first: ``test_interpreter_suite``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from layerscope import kernels
from layerscope.capture.layout import Axis, LayoutView

from ._reference import (
    as_float64,
    assert_stats_close,
    channel_stats_reference,
    scan_grads_reference,
    scan_reference,
)

pytest.importorskip("triton")
from layerscope.kernels import _triton

THRESHOLDS = (0.0, 0.5)
INTERPRETING = _triton.interpreting()


@pytest.fixture(params=["interpreter", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request, monkeypatch):
    """CPU tensors under the interpreter, or CUDA tensors compiled for the GPU."""
    monkeypatch.setattr(kernels, "_choice_cache", {})
    if request.param == "interpreter":
        if not INTERPRETING:
            pytest.skip("run by test_interpreter_suite, in a subprocess with TRITON_INTERPRET=1")
        return torch.device("cpu")
    if INTERPRETING:
        pytest.skip("compiled kernels are not tested under TRITON_INTERPRET=1")
    return torch.device("cuda")


@pytest.mark.skipif(INTERPRETING, reason="already in the interpreter subprocess")
def test_interpreter_suite():
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "interpreter"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    tail = run.stdout[-6000:] + run.stderr[-3000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and " failed" not in run.stdout and " error" not in run.stdout, tail


def poisoned(shape, dtype, device) -> torch.Tensor:
    x = torch.randn(*shape, dtype=torch.float64) * 2
    x.view(-1)[::17] = float("nan")
    x.view(-1)[3::23] = float("inf")
    x.view(-1)[5::7] = 0.0
    return x.to(dtype).to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "channels_last,shape,split",
    [(False, (3, 5, 70), None), (False, (2, 3, 300), 3), (True, (2, 45, 7), 2), (True, (4, 1, 9), None)],
)
def test_channel_reduce(device, dtype, channels_last, shape, split):
    x = poisoned(shape, dtype, device)
    view = LayoutView(x, channels_last, Axis.SPACE, ())
    got = _triton.channel_reduce_triton(view, THRESHOLDS, split=split)
    ref = channel_stats_reference(as_float64(view.nsc().cpu()), THRESHOLDS)
    assert_stats_close(got, ref, rtol=1e-12 if dtype == torch.float64 else 1e-6)


def test_dispatch_picks_triton_when_forced(device):
    view = LayoutView(torch.randn(2, 3, 10, device=device), False, Axis.SPACE, (10,))
    backend, why = kernels.select_backend(device, torch.float32, "triton")
    assert backend.name == "triton" and why.startswith("forced:")
    got = kernels.channel_reduce(view, (0.0,), backend="triton")
    assert_stats_close(got, channel_stats_reference(as_float64(view.nsc().cpu()), (0.0,)), rtol=1e-6)


@pytest.mark.parametrize("chunks", [None, 1, 3])
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_forward_and_backward(device, chunks, with_h0):
    torch.manual_seed(2)
    a = torch.rand(2, 50, 5, dtype=torch.float64) * 2.4 - 1.2  # a < 0, |a| > 1 and near 0
    a[:, 7] = 0.0
    b, g = torch.randn(2, 50, 5, dtype=torch.float64), torch.randn(2, 50, 5, dtype=torch.float64)
    h0 = torch.randn(2, 5, dtype=torch.float64) if with_h0 else None
    dev = lambda t: None if t is None else t.to(device)  # noqa: E731
    h = _triton.scan_forward_triton(dev(a), dev(b), dev(h0), chunks=chunks)
    want = scan_reference(a.numpy(), b.numpy(), None if h0 is None else h0.numpy())
    np.testing.assert_allclose(h.cpu().numpy(), want, rtol=1e-12, atol=1e-12)
    ga, gb, gh0 = _triton.scan_backward_triton(dev(a), h, dev(h0), dev(g), chunks=chunks)
    ra, rb, rh0 = scan_grads_reference(a.numpy(), want, None if h0 is None else h0.numpy(), g.numpy())
    np.testing.assert_allclose(ga.cpu().numpy(), ra, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb.cpu().numpy(), rb, rtol=1e-10, atol=1e-12)
    if with_h0:
        np.testing.assert_allclose(gh0.cpu().numpy(), rh0, rtol=1e-10, atol=1e-12)
    else:
        assert gh0 is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_scan_half_inputs_accumulate_in_float32(device, dtype):
    a = (torch.rand(1, 200, 3) * 0.5 + 0.45).to(dtype)
    b = torch.randn(1, 200, 3).to(dtype)
    h = _triton.scan_forward_triton(a.to(device), b.to(device), None, chunks=2)
    assert h.dtype == torch.float32
    want = scan_reference(as_float64(a), as_float64(b), None)
    np.testing.assert_allclose(h.cpu().numpy(), want, rtol=1e-5, atol=1e-5)


def test_histogram(device):
    x = torch.cat(
        [
            torch.randn(3000, dtype=torch.float64),
            torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0, -1.0, 0.25]),
        ]
    )
    got = _triton.histogram_triton(x.to(device), 8, -1.0, 1.0)
    np.testing.assert_array_equal(
        got.cpu().numpy(), kernels.histogram(x, 8, -1.0, 1.0, backend="torch").numpy()
    )
