"""Backend selection: order, reasons, forcing, the missing-extension path (one warning), and the same
statistics through every available backend — kernel level and probe level."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from layerscope import ConfigError, kernels
from layerscope._probe import Probe
from layerscope.capture.layout import Axis, LayoutView
from layerscope.kernels import _native

from ._reference import NATIVE_BUILT, as_float64, assert_stats_close, channel_stats_reference, needs_native

CPU = torch.device("cpu")


def cpu_backends() -> list[str]:
    return [n for n in kernels.BACKENDS if kernels.BACKENDS.get(n).available(CPU, torch.float32)[0]]


@pytest.fixture
def fresh_choices(monkeypatch):
    monkeypatch.setattr(kernels, "_choice_cache", {})


@needs_native
def test_native_is_preferred_on_cpu_and_says_why(fresh_choices):
    for kernel in kernels.KERNELS:
        backend, why = kernels.select_backend(CPU, torch.float32, kernel=kernel)
        assert backend.name == "native" and "layerscope._C" in why
    backend, why = kernels.select_backend(torch.device("cuda"), torch.float32)
    assert backend.name != "native" and "native unavailable (tensor on cuda)" in why


def test_unsupported_dtype_falls_back_to_torch_with_the_reason(fresh_choices):
    backend, why = kernels.select_backend(CPU, torch.int32)
    assert backend.name == "torch"
    if NATIVE_BUILT:
        assert "dtype torch.int32 not supported" in why


def test_forcing(fresh_choices):
    assert kernels.select_backend(CPU, torch.float32, "torch")[1].startswith("forced:")
    with pytest.raises(ConfigError, match="unknown kernel backend 'cuDNN'"):
        kernels.select_backend(CPU, torch.float32, "cuDNN")
    with pytest.raises(ConfigError, match="cannot run on cpu"):
        kernels.select_backend(CPU, torch.float32, "triton")  # no TRITON_INTERPRET here
    with pytest.raises(ConfigError, match="unknown kernel 'fft'"):
        kernels.select_backend(CPU, torch.float32, kernel="fft")


def test_missing_extension_falls_back_with_one_warning(monkeypatch, fresh_choices):
    monkeypatch.setattr(_native, "_C", None)
    monkeypatch.setattr(_native, "_MISSING", "layerscope._C not built: No module named 'layerscope._C'")
    monkeypatch.setattr(_native, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend, why = kernels.select_backend(CPU, torch.float32)
        kernels.select_backend(CPU, torch.float64)
        kernels.select_backend(CPU, torch.float32, kernel="scan")
        info = kernels.backend_info()
    assert backend.name == "torch"
    assert "native unavailable (layerscope._C not built: No module named 'layerscope._C')" in why
    assert "not built" in info["cpu"]
    native_warnings = [w for w in caught if "layerscope._C not built" in str(w.message)]
    assert len(native_warnings) == 1 and issubclass(native_warnings[0].category, RuntimeWarning)
    with pytest.raises(ConfigError, match="not built"):
        kernels.select_backend(CPU, torch.float32, "native")
    view = LayoutView(torch.randn(2, 3, 4), False, Axis.SPACE, (4,))
    assert kernels.channel_reduce(view, (0.0,)).count.tolist() == [8, 8, 8]  # still works, on torch


def test_kernel_environment_reports_every_kernel_and_device():
    env = kernels.kernel_environment()
    assert set(env["backends"]) == set(kernels.KERNELS)
    assert all(set(v) == {"cpu", "cuda"} for v in env["backends"].values())
    assert env["threads"] == torch.get_num_threads()
    assert ("openmp" in env["native"]) == NATIVE_BUILT


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_backend_gives_the_same_channel_stats(channels_last, dtype):
    x = torch.randn(6, 40, 33, dtype=dtype) * 2
    x.view(-1)[::37] = float("nan")
    x.view(-1)[4::41] = float("inf")
    x.view(-1)[9::7] = 0.0
    view = LayoutView(x, channels_last, Axis.SPACE, (40,) if channels_last else (33,))
    ref = channel_stats_reference(as_float64(view.nsc()), (0.0, 0.3))
    names = cpu_backends()
    assert "torch" in names
    for name in names:
        assert_stats_close(
            kernels.channel_reduce(view, (0.0, 0.3), backend=name),
            ref,
            rtol=1e-6 if dtype == torch.float32 else 1e-12,
        )


def _tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6 * 6, 7), nn.Tanh())


def test_a_probe_forced_to_torch_never_calls_the_extension(monkeypatch):
    """backend="torch" is the reference path: reduction, histogram and state updates all in torch."""

    class Refuse:
        def __getattr__(self, name):
            raise AssertionError(f"layerscope._C.{name} called under backend='torch'")

    monkeypatch.setattr(_native, "_C", Refuse())
    torch.manual_seed(1)
    model = _tiny_model()
    with Probe(model, stats=("moments", "coverage", "histogram", "spectrum", "spatial", "covariance"),
               backend="torch") as probe:
        for _ in range(3):
            model(torch.randn(4, 3, 8, 8) * 3)
    assert probe.result().layers["0"].stats["histogram"]["total"] == 3 * 4 * 5 * 6 * 6


@needs_native
def test_probe_gives_the_same_statistics_through_every_backend():
    torch.manual_seed(3)
    model, batches = _tiny_model(), [torch.randn(9, 3, 8, 8) for _ in range(3)]
    per_backend = {}
    for name in cpu_backends():
        with Probe(model, stats=("moments",), backend=name) as probe:
            for xb in batches:
                model(xb)
        result = probe.result()
        per_backend[name] = {layer: r.stats["moments"] for layer, r in result.layers.items()}
    first, *others = per_backend.values()
    assert len(per_backend) >= 2
    for other in others:
        for layer, stats in first.items():
            for key in ("count", "nan", "inf", "dead_channels"):
                assert stats[key] == other[layer][key], (layer, key)
            for key in ("mean", "std", "min", "max"):
                assert stats[key] == pytest.approx(other[layer][key], rel=1e-6, abs=1e-7), (layer, key)
            for key, values in stats["per_channel"].items():
                np.testing.assert_allclose(
                    np.asarray(other[layer]["per_channel"][key], dtype=float),
                    np.asarray(values, dtype=float),
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"{layer} {key}",
                )


@needs_native
def test_native_stats_are_numpy_arrays_with_lazy_tensor_views():
    """The native backend hands out its NumPy arrays; each tensor field is a zero-copy view of them."""
    x = torch.randn(6, 5, 7, dtype=torch.float64)
    x[1, 2, 3] = float("nan")
    view = LayoutView(x, False, Axis.SPACE, (7,))
    got = kernels.channel_reduce(view, (0.0,), backend="native")
    assert got.arrays is not None and len(got.arrays) == len(kernels._contract.TENSOR_FIELDS)
    for name, arr in zip(kernels._contract.TENSOR_FIELDS, got.arrays, strict=True):
        t = getattr(got, name)
        assert t.data_ptr() == arr.ctypes.data and t.shape == arr.shape  # a view, not a copy
        assert getattr(got, name) is t  # made once
    assert not got.all_finite()
    ref = channel_stats_reference(x.numpy().transpose(0, 2, 1), (0.0,))
    np.testing.assert_array_equal(got.nan.numpy(), ref["nan"])
    np.testing.assert_allclose(got.mean.numpy(), ref["mean"], rtol=1e-12)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        got.nope  # noqa: B018
    torch_stats = kernels.channel_reduce(view, (0.0,), backend="torch")
    assert torch_stats.arrays is None
    assert torch.equal(got.count, torch_stats.count)


@needs_native
def test_cached_state_views_follow_replaced_tensors():
    """Moments and coverage keep NumPy views of their CPU state for the native kernels; a state replaced
    by a merge or a reload must not leave them writing into a stale buffer."""
    from layerscope.stats.coverage import NeuronCoverage
    from layerscope.stats.moments import ChannelMoments

    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 3, 5, generator=gen, dtype=torch.float64) + i for i in range(3)]
    views = [LayoutView(b, False, Axis.SPACE, (5,)) for b in batches]
    mom, cov = ChannelMoments(), NeuronCoverage()
    mom_t, cov_t = ChannelMoments(backend="torch"), NeuronCoverage(backend="torch")
    for i, v in enumerate(views):
        reduced = kernels.channel_reduce(v, (0.0,), backend="native")
        for acc in (mom, cov, mom_t, cov_t):
            acc.update(v, reduced)
        if i == 0:  # replace every state tensor: a reload, then a torch-path merge of an empty-count part
            mom = ChannelMoments.from_state_dict(mom.state_dict())
            cov = NeuronCoverage.from_state_dict(cov.state_dict())
            cov.merge(NeuronCoverage.from_state_dict(cov_t.state_dict()))
            cov_t.merge(NeuronCoverage.from_state_dict(cov_t.state_dict()))
    for f in ChannelMoments._FIELDS:
        assert torch.equal(getattr(mom, f), getattr(mom_t, f)), f
    for f in NeuronCoverage._TENSORS:
        assert torch.equal(getattr(cov, f), getattr(cov_t, f)), f
    all_x = torch.cat(batches)
    np.testing.assert_allclose(mom.mean.numpy(), all_x.mean(dim=(0, 2)).numpy(), rtol=1e-12)
