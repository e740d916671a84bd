"""FLOP counts against analytic references (hand formulas, not torch's own counter)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layerscope import ConfigError
from layerscope.cost import count_flops
from layerscope.zoo import build

MATMUL_ONLY = {"include_bias": False, "include_elementwise": False}


class MatMul(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


def test_mm_flops_and_macs():
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    assert count_flops(MatMul(), (a, b)).forward == 2 * 4 * 5 * 6 == 240
    assert count_flops(MatMul(), (a, b), convention="macs").forward == 4 * 5 * 6 == 120


def test_unknown_convention_is_a_config_error():
    with pytest.raises(ConfigError, match="flops, macs"):
        count_flops(MatMul(), (torch.randn(2, 2), torch.randn(2, 2)), convention="gflops")


def test_linear_with_and_without_bias():
    lin, x = nn.Linear(8, 16), torch.randn(4, 8)
    assert count_flops(lin, x, include_bias=False).forward == 2 * 4 * 8 * 16 == 1024
    assert count_flops(lin, x, include_bias=True).forward == 1024 + 4 * 16 == 1088
    assert count_flops(lin, x, convention="macs", include_bias=True).forward == 512 + 64


def _conv_out(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1  # the Conv2d docs' formula


@pytest.mark.parametrize("groups", [1, 4, 16], ids=["dense", "grouped", "depthwise"])
def test_conv2d_forward_and_backward_against_hand_formula(groups):
    n, c_in, c_out, h, w, k, stride, pad, dil = 2, 16, 32, 11, 9, 3, 2, 1, 2
    conv = nn.Conv2d(c_in, c_out, k, stride, pad, dil, groups=groups, bias=True)
    x = torch.randn(n, c_in, h, w, requires_grad=True)
    h_out, w_out = _conv_out(h, k, stride, pad, dil), _conv_out(w, k, stride, pad, dil)
    outputs = n * c_out * h_out * w_out
    macs = outputs * (c_in // groups) * k * k
    r = count_flops(conv, x, **MATMUL_ONLY)
    assert r.forward == 2 * macs
    # backward: grad_input and grad_weight each cost the forward's MACs (torch's own formula counts the
    # grouped weight gradient `groups` times; layerscope's corrects it)
    assert r.backward == 2 * r.forward
    with_bias = count_flops(conv, x, include_bias=True, include_elementwise=False)
    assert with_bias.forward == 2 * macs + outputs
    assert with_bias.backward == 4 * macs + outputs  # grad_bias: one add per grad_out element


def test_linear_backward_is_twice_forward_when_the_input_needs_a_gradient():
    lin = nn.Linear(32, 24, bias=False)
    x = torch.randn(5, 32, requires_grad=True)
    r = count_flops(lin, x, **MATMUL_ONLY)
    assert r.forward == 2 * 5 * 32 * 24
    assert r.backward == 2 * r.forward


def test_backward_is_measured_not_assumed():
    # a first layer whose input needs no gradient computes only grad_weight: 1 × forward, not 2 ×
    lin = nn.Linear(32, 24, bias=False)
    r = count_flops(lin, torch.randn(5, 32), **MATMUL_ONLY)
    assert r.backward == r.forward == 2 * 5 * 32 * 24


class Attention(nn.Module):
    def __init__(self, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


def test_sdpa_non_causal_and_causal_halving():
    q = torch.randn(1, 12, 64, 64)
    b, h, s, d = q.shape
    two_bmm = 2 * (2 * b * h * s * s * d)  # QK^T and AV
    assert two_bmm == 12_582_912
    assert count_flops(Attention(), (q, q, q), **MATMUL_ONLY).forward == 12_582_912
    causal = Attention(causal=True)
    assert count_flops(causal, (q, q, q), **MATMUL_ONLY).forward == 12_582_912  # halving is opt-in
    assert count_flops(causal, (q, q, q), causal_halving=True, **MATMUL_ONLY).forward == 12_582_912 // 2
    # elementwise: softmax (5) + scale (1) per score
    assert count_flops(Attention(), (q, q, q), include_bias=False).forward == 12_582_912 + 6 * b * h * s * s


def test_sdpa_backward_counted_on_cpu():
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    r = count_flops(Attention(), (q, q, q), **MATMUL_ONLY)
    b, h, s, d = q.shape
    # flash backward: recompute QK^T, then dV, dP, dQ, dK: five (B·H, S, S/D) products (torch's formula)
    assert r.backward == 5 * 2 * b * h * s * s * d


class Einsum3(nn.Module):
    def forward(self, a, b, c):
        return torch.einsum("ij,jk,kl->il", a, b, c)


def test_einsum_with_three_operands():
    # (2,30)@(30,40) first, then @(40,3): the left-to-right order is also the optimal one here,
    # so the count does not depend on whether opt_einsum is installed
    a, b, c = torch.randn(2, 30), torch.randn(30, 40), torch.randn(40, 3)
    expected = 2 * 2 * 30 * 40 + 2 * 2 * 40 * 3
    assert count_flops(Einsum3(), (a, b, c), backward=False).forward == expected == 5280


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 8, bias=False)

    def forward(self, x):
        return self.lin(self.lin(x))


def test_module_called_twice_counts_flops_twice():
    r = count_flops(Twice(), torch.randn(3, 8), backward=False)
    assert r.forward == 2 * (2 * 3 * 8 * 8)
    assert r.by_module["lin"].forward == r.forward


class ReusedReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.act = nn.Linear(8, 16), nn.Linear(16, 4), nn.ReLU()

    def forward(self, x):
        return self.act(self.b(self.act(self.a(x))))


def test_reused_relu_counts_both_calls():
    r = count_flops(ReusedReLU(), torch.randn(3, 8), backward=False)
    assert r.by_module["act"].forward == 3 * 16 + 3 * 4  # one op per element, both calls
    assert r.by_module["a"].forward == 2 * 3 * 8 * 16 + 3 * 16


class TiedLM(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx):
        return self.head(self.emb(idx))


def test_tied_embeddings_flops():
    idx = torch.randint(0, 50, (2, 7))
    r = count_flops(TiedLM(), idx, **MATMUL_ONLY)
    assert r.forward == 2 * (2 * 7) * 8 * 50  # the gather is 0 FLOPs (category "data"), the head a matmul
    assert r.by_module["emb"].forward == 0
    ops = {o.op: o for o in r.ops}
    assert ops["aten.embedding"].category == "data" and ops["aten.embedding"].calls_forward == 1


def test_resnet18_at_224_is_1_82_gmacs():
    r = count_flops(build("resnet18"), torch.randn(1, 3, 224, 224), convention="macs", backward=False,
                    **MATMUL_ONLY)
    assert r.forward == pytest.approx(1.82e9, rel=0.01)


def test_meta_device_gives_the_same_counts():
    x = torch.randn(1, 3, 16, 16)
    cpu = count_flops(build("resnet18-cifar"), x)
    with torch.device("meta"):
        model = build("resnet18-cifar")
    meta = count_flops(model, x.to("meta"))
    assert (meta.forward, meta.backward) == (cpu.forward, cpu.backward)


def test_inference_mode_counts_the_forward():
    model, x = build("cnn"), torch.randn(2, 3, 32, 32)
    normal = count_flops(model, x, training=False)
    with torch.inference_mode():
        inference = count_flops(model, x, training=False)
    assert inference.forward == normal.forward and inference.backward is None


class Sorts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        x = torch.sort(self.lin(x), dim=-1).values
        return torch.sort(x, dim=0).values


def test_ops_without_formula_are_listed_never_silent():
    r = count_flops(Sorts(), torch.randn(3, 4), backward=False)
    assert r.uncounted == {"aten.sort": 2}
    assert r.by_module[""].uncounted_calls == 2 and r.by_module["lin"].uncounted_calls == 0
    assert r.forward == 2 * 3 * 4 * 4 + 3 * 4  # the linear layer alone: the sorts add nothing


def test_fused_transformer_fast_path_equals_the_decomposed_path():
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2,
                                enable_nested_tensor=False)
    x = torch.randn(2, 7, 32)
    for kwargs in ({}, {"convention": "macs", **MATMUL_ONLY}):
        # with gradients enabled torch takes the decomposed path, under no_grad the fused kernel
        decomposed = count_flops(enc, x, training=False, backward=False, **kwargs)
        with torch.no_grad():
            fused = count_flops(enc, x, training=False, **kwargs)
        assert "aten._transformer_encoder_layer_fwd" in {o.op for o in fused.ops}
        assert "aten._transformer_encoder_layer_fwd" not in {o.op for o in decomposed.ops}
        assert fused.forward == decomposed.forward


def test_cpu_lstm_kernel_against_hand_formula():
    lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True)
    b, t, i, h = 3, 5, 8, 16
    r = count_flops(lstm, torch.randn(b, t, i), convention="macs", **MATMUL_ONLY)
    # per layer and step: 4 gates × (input @ W_ih^T + h @ W_hh^T)
    assert r.forward == b * t * 4 * h * (i + h) + b * t * 4 * h * (h + h)
    assert not r.uncounted


def test_backward_attribution_adds_up_and_identity_gets_none():
    r = count_flops(build("resnet18-cifar"), torch.randn(1, 3, 16, 16))
    top = [name for name in r.by_module if name and "." not in name]
    assert sum(r.by_module[n].backward for n in top) == r.by_module[""].backward == r.backward
    assert "maxpool" not in r.by_module  # nn.Identity runs no op, forward or backward


def test_cuda_rnn_formula_against_hand_formula():
    # no GPU needed: the formula is a function of shapes; cuDNN passes every layer's weights in one list
    from layerscope.cost._formulas import build_mapping
    from layerscope.cost.conventions import CountingRules

    lstm = nn.LSTM(8, 16, num_layers=2)
    t, b, i, h = 5, 3, 8, 16
    weights = [w.shape for w in lstm._flat_weights]  # [W_ih, W_hh, b_ih, b_hh] per layer
    mapping = build_mapping(CountingRules.make("macs", include_bias=False, include_elementwise=False))
    x, state = torch.Size([t, b, i]), torch.Size([2, b, h])
    fwd = mapping[torch.ops.aten._cudnn_rnn](x, weights, 4, None, state, state, 2, h, 0, 2, False, 0.0, True,
                                             False, [], None)
    assert fwd == b * t * 4 * h * (i + h) + b * t * 4 * h * (h + h)
    bwd = mapping[torch.ops.aten._cudnn_rnn_backward](x, weights, 4, None, state, state, x, x, state, state,
                                                      2, h)
    assert bwd == 2 * fwd
