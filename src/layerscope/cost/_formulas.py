"""FLOP formulas for ``FlopCounterMode``'s ``custom_mapping``: torch's own, corrected and completed.

Gaps in ``torch.utils.flop_counter`` (torch 2.x) that these formulas close, each checked by a test:

- bias adds of ``addmm``/``baddbmm``/``convolution`` (and the bias gradient of ``convolution_backward``)
  are not counted → counted as "bias", switchable;
- ``convolution_backward`` counts the weight gradient of a grouped convolution ``groups`` times
  (it ignores ``groups``) → divided by ``groups``;
- the CPU attention kernel ``_scaled_dot_product_flash_attention_for_cpu`` (+ backward) has no formula
  (a silent 0 on CPU) → torch's own ``sdpa_flop_count`` applied to it; every fused attention kernel gets the
  softmax as elementwise work and an explicit causal halving;
- fused kernels with no formula: ``mkldnn_rnn_layer`` (+ backward, the CPU LSTM), ``_cudnn_rnn``
  (+ backward, LSTM/GRU on CUDA),
  ``_transformer_encoder_layer_fwd`` and ``_native_multi_head_attention`` (the inference fast paths).

Matrix-product parts are computed with torch's formulas (``mm_flop``, ``bmm_flop``, ``conv_flop_count``,
``sdpa_flop_count``, ``sdpa_backward_flop_count``: FLOPs = 2 × MACs) and then scaled to the convention.
Formulas receive shapes, not tensors (``FlopCounterMode`` applies ``shape_wrapper`` to custom entries).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from math import prod
from typing import Any

import torch
from torch.utils import flop_counter as fc

from ._elementwise import ELEMENTWISE_FORMULAS, ZERO_COST_OPS
from .conventions import CountingRules

aten = torch.ops.aten
Formula = Callable[..., int]
FormulaFactory = Callable[[CountingRules], Formula]

# packet -> factory(rules) -> formula; filled by @_formula below (a registry, not a switch).
_MATMUL_FORMULAS: dict[Any, FormulaFactory] = {}

# Softmax over one attention score: max, subtract, exp, sum, divide (5) + the 1/sqrt(d) scale (1).
# Backward: softmax backward (y·(g − Σ g·y): 4) + scale (1). Conventions, documented in docs/profile.md.
_SCORE_FWD, _SCORE_BWD = 6, 5


def _formula(*names: str) -> Callable[[FormulaFactory], FormulaFactory]:
    def deco(factory: FormulaFactory) -> FormulaFactory:
        for name in names:
            packet = getattr(aten, name, None)
            if packet is not None:  # an op this torch build lacks is simply not registered
                _MATMUL_FORMULAS[packet] = factory
        return factory

    return deco


def _numel(shape: Any) -> int:
    return int(prod(shape)) if shape is not None else 0


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    """An argument by schema position or name; the dispatcher leaves out trailing defaults."""
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


# ---------------------------------------------------------------- matrix products with their bias


@_formula("addmm")
def _addmm(rules: CountingRules) -> Formula:
    def f(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        # self (n,) or (m, n) + (m, k) @ (k, n) -> (m, n): one add per output element for the bias
        return rules.total(fc.mm_flop(a_shape, b_shape), bias=_numel(out_shape))

    return f


@_formula("baddbmm")
def _baddbmm(rules: CountingRules) -> Formula:
    def f(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        return rules.total(fc.bmm_flop(a_shape, b_shape), bias=_numel(out_shape))

    return f


@_formula("convolution", "_convolution")
def _convolution(rules: CountingRules) -> Formula:
    def f(x_shape, w_shape, bias, stride, padding, dilation, transposed, *args, out_shape=None,
          **kwargs) -> int:
        # torch's conv_flop_count uses w_shape[1] = C_in / groups, so it is right for grouped convs.
        # Padded positions count as MACs (the usual convention: fvcore, torchvision, the ResNet paper).
        macs2 = fc.conv_flop_count(x_shape, w_shape, out_shape, transposed=transposed)
        return rules.total(macs2, bias=_numel(out_shape) if bias is not None else 0)

    return f


@_formula("convolution_backward")
def _convolution_backward(rules: CountingRules) -> Formula:
    def f(grad_out_shape, x_shape, w_shape, bias_sizes, stride, padding, dilation, transposed, output_padding,
          groups, output_mask, out_shape=None, **kwargs) -> int:
        def t(shape: Any) -> list[int]:  # swap the first two dims: (N, C, ...) <-> (C, N, ...)
            return [shape[1], shape[0], *shape[2:]]

        macs2 = 0
        if output_mask[0]:  # grad_input = conv_transpose(grad_out, weight): same MACs as the forward
            macs2 += fc.conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
        if output_mask[1]:  # grad_weight = conv(input, grad_out) per group; torch's formula forgets the
            a, b = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)  # groups, so we
            macs2 += fc.conv_flop_count(t(a), t(b), t(out_shape[1]), transposed=False) // groups  # divide
        bias = _numel(grad_out_shape) if output_mask[2] else 0  # grad_bias = sum of grad_out over N, S…
        return rules.total(macs2, bias=bias)

    return f


# ---------------------------------------------------------------- fused attention

_ATTENTION_KERNELS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)


def _schema_index(packet: Any, name: str) -> int:
    """Position of argument ``name`` in the op's schema (the dispatcher passes it positionally)."""
    schema = getattr(packet, packet.overloads()[0])._schema
    return [a.name for a in schema.arguments].index(name)


def _scores(q_shape: Any, k_shape: Any) -> int:
    b, h_q, s_q, _ = q_shape  # (B, Hq, Sq, D) @ (B, Hkv, Sk, D)^T -> scores (B, Hq, Sq, Sk)
    return b * h_q * s_q * k_shape[2]


def _attention_factory(causal_index: int, backward: bool) -> FormulaFactory:
    def factory(rules: CountingRules) -> Formula:
        def f(*args, out_shape=None, **kwargs) -> int:
            if backward:
                g, q, k, v = args[:4]
                units = rules.total(fc.sdpa_backward_flop_count(g, q, k, v),
                                    elementwise=_SCORE_BWD * _scores(q, k))
            else:
                q, k, v = args[:3]
                units = rules.total(fc.sdpa_flop_count(q, k, v), elementwise=_SCORE_FWD * _scores(q, k))
            causal = bool(_arg(args, kwargs, causal_index, "is_causal", False))
            # FlashAttention's convention for a causal mask: half the work (Dao et al., benchmark code)
            return units // 2 if (causal and rules.causal_halving) else units

        return f

    return factory


for _kernel in _ATTENTION_KERNELS:
    for _name in (_kernel, f"{_kernel}_backward"):
        if hasattr(aten, _name):
            _index = _schema_index(getattr(aten, _name), "is_causal")
            _formula(_name)(_attention_factory(_index, backward=_name.endswith("_backward")))


@_formula("_native_multi_head_attention")
def _native_mha(rules: CountingRules) -> Formula:
    def f(q, k, v, embed_dim, num_head, *args, out_shape=None, **kwargs) -> int:
        # (B, Tq, E), (B, Tk, E): q/k/v/out projections + QK^T and AV (each B·Tq·Tk·E MACs)
        b, t_q, e = q
        t_k = k[1]
        macs = b * (t_q * e * e * 2 + t_k * e * e * 2 + 2 * t_q * t_k * e)
        bias = b * e * (2 * t_q + 2 * t_k)
        return rules.total(2 * macs, bias=bias, elementwise=_SCORE_FWD * b * num_head * t_q * t_k)

    return f


@_formula("_transformer_encoder_layer_fwd")
def _transformer_layer(rules: CountingRules) -> Formula:
    def f(src, embed_dim, num_heads, qkv_w, qkv_b, proj_w, proj_b, use_gelu, norm_first, eps, n1w, n1b, n2w,
          n2b, ffn1_w, ffn1_b, ffn2_w, ffn2_b, *args, out_shape=None, **kwargs) -> int:
        # src (B, T, E); FFN hidden F = ffn1_w[0]. Projections: qkv 3E·E, out E·E, FFN 2·E·F per token.
        b, t, e = src
        ffn, tokens = ffn1_w[0], b * t
        macs = tokens * (4 * e * e + 2 * e * ffn) + 2 * b * t * t * e  # + QK^T and AV
        bias = tokens * (4 * e + ffn + e)
        elementwise = (_SCORE_FWD * b * num_heads * t * t  # softmax + scale
                       + tokens * e * (2 * 5 + 2)  # two layer norms (5/elt, affine) + two residual adds
                       + tokens * ffn)  # activation
        return rules.total(2 * macs, bias=bias, elementwise=elementwise)

    return f


# ---------------------------------------------------------------- fused recurrent layers (CPU LSTM)


def _rnn_sizes(x: Any, w_ih: Any, w_hh: Any, hidden: int, batch_first: bool) -> tuple[int, int, int, int]:
    steps_x_batch = x[0] * x[1] if len(x) == 3 else x[0]  # (T, B, I) or (B, T, I): T·B either way
    gates_x_hidden = w_ih[0]  # (G·H, I): G = 4 for an LSTM
    return steps_x_batch, gates_x_hidden, w_ih[1], w_hh[1]


@_formula("mkldnn_rnn_layer")
def _mkldnn_rnn(rules: CountingRules) -> Formula:
    def f(x, w_ih, w_hh, b_ih, b_hh, hx, cx, reverse, batch_sizes, mode, hidden, num_layers, has_biases,
          bidirectional, batch_first, *args, out_shape=None, **kwargs) -> int:
        tb, gh, i, h = _rnn_sizes(x, w_ih, w_hh, hidden, batch_first)
        macs = tb * gh * (i + h)  # per step: x_t @ W_ih^T and h_{t-1} @ W_hh^T
        bias = 2 * tb * gh if has_biases else 0  # b_ih and b_hh
        elementwise = tb * (gh + 5 * h)  # gate nonlinearities + c' = f·c + i·g (3) + h = o·tanh(c') (2)
        return rules.total(2 * macs, bias=bias, elementwise=elementwise)

    return f


@_formula("mkldnn_rnn_layer_backward")
def _mkldnn_rnn_backward(rules: CountingRules) -> Formula:
    def f(x, w_ih, w_hh, b_ih, b_hh, hx, cx, output, hy, cy, grad_out, grad_hy, grad_cy, reverse, mode,
          hidden, num_layers, has_biases, *args, out_shape=None, **kwargs) -> int:
        tb, gh, i, h = _rnn_sizes(x, w_ih, w_hh, hidden, False)
        macs = 2 * tb * gh * (i + h)  # grad wrt x and h_{t-1}, and wrt W_ih and W_hh
        bias = tb * gh if has_biases else 0  # one sum over steps for the (equal) bias gradients
        return rules.total(2 * macs, bias=bias, elementwise=2 * tb * (gh + 5 * h))  # estimate: 2× forward

    return f


def _cudnn_parts(x: Any, weights: list[Any], per_layer: int, hidden: int) -> tuple[int, int, int]:
    """(MACs, bias adds, elementwise) of a cuDNN RNN from its flat weight list: per layer and direction
    ``[W_ih, W_hh, (b_ih, b_hh), (W_hr)]``; every matrix multiplies one vector per step and batch row."""
    tb = int(prod(x[:-1]))  # (T, B, I), (B, T, I) or packed (ΣT, I): steps × batch either way
    macs = tb * sum(w[0] * w[1] for w in weights if len(w) == 2)
    bias = tb * sum(w[0] for w in weights if len(w) == 1)
    layers_x_directions = len(weights) // per_layer
    return macs, bias, tb * layers_x_directions * (weights[0][0] + 5 * hidden)


@_formula("_cudnn_rnn")
def _cudnn_rnn(rules: CountingRules) -> Formula:
    def f(x, weights, per_layer, weight_buf, hx, cx, mode, hidden, *args, out_shape=None, **kwargs) -> int:
        macs, bias, elementwise = _cudnn_parts(x, weights, per_layer, hidden)
        return rules.total(2 * macs, bias=bias, elementwise=elementwise)

    return f


@_formula("_cudnn_rnn_backward")
def _cudnn_rnn_backward(rules: CountingRules) -> Formula:
    def f(x, weights, per_layer, weight_buf, hx, cx, output, grad_out, grad_hy, grad_cy, mode, hidden,
          *args, out_shape=None, **kwargs) -> int:
        macs, bias, elementwise = _cudnn_parts(x, weights, per_layer, hidden)
        # grads wrt inputs/states and wrt weights: 2 × the forward's MACs; one sum per bias pair
        return rules.total(4 * macs, bias=bias // 2, elementwise=2 * elementwise)

    return f


# ---------------------------------------------------------------- the mapping and the op categories


def _torch_formula_in_convention(formula: Formula, rules: CountingRules) -> Formula:
    """One of torch's registered (already shape-wrapped) formulas, rescaled to the convention."""

    @functools.wraps(formula)
    def f(*args, **kwargs) -> int:
        return rules.total(formula(*args, **kwargs))

    f._get_raw = True  # type: ignore[attr-defined]  # torch's entry unwraps shapes itself
    return f


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def build_mapping(rules: CountingRules) -> dict[Any, Formula]:
    """The ``custom_mapping`` for ``FlopCounterMode``: every formula in the chosen convention."""
    mapping: dict[Any, Formula] = {k: _torch_formula_in_convention(f, rules)
                                   for k, f in fc.flop_registry.items()}
    mapping.update({k: factory(rules) for k, factory in _MATMUL_FORMULAS.items()})
    mapping.update({k: factory(rules) for k, factory in ELEMENTWISE_FORMULAS.items()})
    mapping.update(dict.fromkeys(ZERO_COST_OPS, _zero))
    return mapping


def op_category(packet: Any) -> str:
    """``matmul`` (MAC-based, bias folded in), ``elementwise``, ``data`` (0 by definition) or
    ``uncounted``."""
    if packet in _MATMUL_FORMULAS or packet in fc.flop_registry:
        return "matmul"
    if packet in ELEMENTWISE_FORMULAS:
        return "elementwise"
    if packet in ZERO_COST_OPS:
        return "data"
    return "uncounted"
