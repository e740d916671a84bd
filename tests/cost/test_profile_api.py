"""``layerscope.cost.profile``: results, the model left as found, no hooks or patches left, bad input."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F
import torch.nn.modules.module as module_globals
from torch import nn

from layerscope import ModelError
from layerscope.cost import profile
from layerscope.zoo import build

FAST = {"repeats": 3, "warmup": 1}


def _small() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def test_profile_reports_every_part():
    p = profile(_small(), torch.randn(32, 64), **FAST)
    assert p.parameters.total == 64 * 128 + 128 + 128 * 10 + 10
    assert p.flops.forward == 2 * 32 * 64 * 128 + 32 * 128 + 32 * 128 + 2 * 32 * 128 * 10 + 32 * 10
    assert p.flops.backward is not None and p.timing is not None and p.gradients is not None
    assert p.timing.threads == torch.get_num_threads()
    assert [layer.name for layer in p.layers] == ["", "0", "1", "2"]
    assert p.layers[1].flops_forward == 2 * 32 * 64 * 128 + 32 * 128 and p.layers[1].calls == 1
    assert set(p.timing.layer_forward_ms) == {"", "0", "1", "2"}
    json.dumps(p.to_dict(), allow_nan=False)  # plain, strict JSON


def test_timing_summary_matches_the_statistics_module():
    p = profile(_small(), torch.randn(8, 64), repeats=5, warmup=1, layer_times=False)
    s = p.timing.forward_ms
    assert s.n == 5 and s.median == pytest.approx(statistics.median(s.samples))
    assert s.mean == pytest.approx(statistics.fmean(s.samples))
    assert s.std == pytest.approx(statistics.stdev(s.samples))
    q1, _, q3 = statistics.quantiles(s.samples, n=4, method="inclusive")
    assert s.iqr == pytest.approx(q3 - q1)
    steps = p.timing.step_ms.samples
    backward = p.timing.backward_ms.samples
    assert steps == pytest.approx([f + b for f, b in zip(s.samples, backward, strict=True)])


def test_activation_memory_saved_for_backward():
    # Linear(64→128) saves its input (the example input: excluded) and weight (a parameter: excluded);
    # ReLU saves its output, which the second Linear saves again (same storage: once).
    p = profile(_small(), torch.randn(32, 64), repeats=0)
    assert p.memory.activation_bytes == 32 * 128 * 4
    assert p.memory.activation_bytes_by_layer == {"1": 32 * 128 * 4}


class Allocates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        big = torch.ones(50_000_000)  # 200 MB, touched, alive for a while
        return self.lin(x) + big[:4].sum() + big.mul(2)[-4:].sum()


def test_rss_increase_sees_a_large_temporary():
    p = profile(Allocates(), torch.randn(2, 4), repeats=0)
    assert p.memory.rss_increase_bytes > 150 * 2**20
    assert p.memory.peak_rss_bytes >= p.memory.rss_step_peak_bytes - 2**20


def test_peak_rss_units_match_proc_status():
    from layerscope.cost.memory import current_rss_bytes, peak_rss_bytes

    status = open("/proc/self/status").read() if hasattr(__import__("os"), "sched_getaffinity") else ""
    hwm = [int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
    if not hwm:
        pytest.skip("no /proc/self/status (not Linux)")
    assert peak_rss_bytes() == pytest.approx(hwm[0], rel=0.05)  # ru_maxrss is KiB on Linux
    psutil = pytest.importorskip("psutil")
    assert current_rss_bytes() == pytest.approx(psutil.Process().memory_info().rss, rel=0.05)


class Scaled(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


def test_gradient_flow_norms_and_flags():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seq = nn.Sequential(nn.Linear(8, 8), Scaled(1e-9), nn.Linear(8, 8), nn.Linear(8, 8),
                                     nn.Linear(8, 8))
            self.unused = nn.Linear(3, 3)

        def forward(self, x):
            return self.seq(x)

    model, x = Net(), torch.randn(4, 8)
    p = profile(model, x, repeats=0)
    # reference: the same backward by hand
    model(x).sum().backward()
    by_name = {g.name.removeprefix("seq."): g for g in p.gradients.layers}
    for name in ("0", "2", "3", "4"):
        layer = model.seq[int(name)]
        ref = math.sqrt(layer.weight.grad.norm() ** 2 + layer.bias.grad.norm() ** 2)
        assert by_name[name].grad_norm == pytest.approx(ref, rel=1e-5)
    assert by_name["0"].flag == "vanishing"  # its gradient passes a ×1e-9
    assert {by_name[n].flag for n in ("2", "3", "4")} == {"ok"}
    assert by_name["unused"].flag == "no_grad"


def test_model_left_as_found():
    model = build("cnn")
    model.eval()
    model.fc.weight.grad = marker = torch.full_like(model.fc.weight, 7.0)
    bn_mean = model.stage1[1].running_mean.clone()
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    profile(model, x, training=True, repeats=2, warmup=0)
    assert not model.training and not any(m.training for m in model.modules())
    assert model.fc.weight.grad is marker
    assert model.stage1[0].weight.grad is None
    assert torch.equal(model.stage1[1].running_mean, bn_mean)  # train-mode steps ran, stats restored
    assert torch.equal(torch.rand(3), expected_next)  # RNG state restored


def _hook_state(model: nn.Module) -> dict:
    def n(d):
        return len(d) if d else 0

    state = {f"global.{k}": n(getattr(module_globals, k))
             for k in dir(module_globals) if k.startswith("_global")}
    for name, m in model.named_modules():
        for k, v in vars(m).items():
            if k.endswith("hooks") or "hooks_" in k:
                state[f"{name}.{k}"] = n(v)
    for name, p in model.named_parameters():
        state[f"{name}._backward_hooks"] = n(p._backward_hooks)
        state[f"{name}._post_accumulate_grad_hooks"] = n(getattr(p, "_post_accumulate_grad_hooks", None))
    state["dispatch_modes"] = torch._C._len_torch_dispatch_stack()
    state["saved_tensor_hooks"] = torch._C._autograd._top_saved_tensors_default_hooks(False) is not None
    return state


def _patch_state() -> dict:
    from torch.utils import flop_counter

    return {**{f"flop_registry.{k}": id(v) for k, v in flop_counter.flop_registry.items()},
            **{f"F.{k}": id(v) for k, v in vars(F).items()},
            **{f"Tensor.{k}": id(v) for k, v in vars(torch.Tensor).items()},
            **{f"torch.{k}": id(getattr(torch, k)) for k in ("matmul", "mm", "conv2d", "einsum")}}


def test_no_hooks_or_patches_left_behind():
    model = build("transformer")
    hooks, patches = _hook_state(model), _patch_state()
    profile(model, torch.randn(2, 32, 16), repeats=2, warmup=0)
    with torch.no_grad():  # the fused fast path, and no backward
        profile(model, torch.randn(2, 32, 16), training=False, repeats=2, warmup=0)
    assert _hook_state(model) == hooks
    assert _patch_state() == patches


class BadShape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(8, 16)
        self.block = nn.Sequential(nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.block(self.first(x))


def test_failure_names_the_layer_and_leaves_nothing_behind():
    model = BadShape()
    hooks = _hook_state(model)
    with pytest.raises(ModelError, match=r"layer 'block\.1' \(Linear\).*\[2, 8\] float32"):
        profile(model, torch.randn(2, 8), **FAST)
    assert _hook_state(model) == hooks
    assert model.training


def test_failure_in_the_models_own_forward_names_the_model():
    class Broken(nn.Module):
        def forward(self, x):
            return x.view(7, -1)

    with pytest.raises(ModelError, match=r"layer '\(Broken\)'"):
        profile(Broken(), torch.randn(2, 8), **FAST)


def test_meta_device_profiles_flops_and_parameters_only():
    with torch.device("meta"):
        model = build("resnet18-cifar")
    p = profile(model, torch.randn(1, 3, 16, 16, device="meta"), **FAST)
    assert p.timing is None and "timing" in p.skipped and "gradients" in p.skipped
    assert p.parameters.total == 11_173_962 and p.flops.backward > p.flops.forward > 0
    assert p.memory.activation_bytes > 0 and p.memory.rss_before_bytes is None


def test_inference_mode_profiles_the_forward():
    with torch.inference_mode():
        p = profile(_small(), torch.randn(4, 64), training=False, **FAST)
    assert p.flops.backward is None and p.timing.backward_ms is None and "backward" in p.skipped
    assert p.gradients is None


def test_loss_fn_is_differentiated():
    target = torch.randint(0, 10, (8,))
    p = profile(_small(), torch.randn(8, 64), loss_fn=lambda out: F.cross_entropy(out, target), repeats=0)
    assert {"aten._log_softmax", "aten.nll_loss_forward"} <= {o.op for o in p.flops.ops}
    assert p.flops.by_module[""].forward < p.flops.forward  # the loss is outside the model


@pytest.mark.gpu
def test_cuda_events_and_allocator_peaks():
    model, x = _small().cuda(), torch.randn(32, 64, device="cuda")
    p = profile(model, x, **FAST)
    assert p.timing.clock == "cuda events" and p.timing.step_ms.median > 0
    m = p.memory
    assert m.cuda_peak_reserved_bytes >= m.cuda_peak_allocated_bytes >= m.cuda_increase_bytes > 0
    assert m.activation_bytes == 32 * 128 * 4  # the same analytic figure as on the CPU
    assert p.flops.forward == profile(_small(), torch.randn(32, 64), repeats=0).flops.forward
