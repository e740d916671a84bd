"""FLOP formulas for the ops ``torch.utils.flop_counter`` ignores: elementwise, normalisation, softmax,
pooling, reductions, losses — and the list of ops that do no arithmetic at all.

The costs per element are conventions, not measurements (a ``tanh`` is not one instruction); they follow
fvcore's ``jit_handles`` where it has one (normalisation: 5 per element with an affine transform, 4 without;
batch norm at inference 2 / 1) and "one per output element" for pointwise ops. Backward costs of the
multi-pass ops are estimates at twice the forward. Every choice is listed in docs/profile.md.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod
from typing import Any

import torch

from .conventions import CountingRules

aten = torch.ops.aten
FormulaFactory = Callable[[CountingRules], Callable[..., int]]
ELEMENTWISE_FORMULAS: dict[Any, FormulaFactory] = {}


def _packets(names: str) -> list[Any]:
    return [p for p in (getattr(aten, n, None) for n in names.split()) if p is not None]


def _numel(shape: Any) -> int:
    if shape is None:
        return 0
    if not isinstance(shape, torch.Size) and isinstance(shape, (tuple, list)) and shape \
            and isinstance(shape[0], (torch.Size, tuple, list)):
        shape = shape[0]  # several outputs: the first is the result
    return int(prod(shape))


def _register(names: str, count: Callable[..., int]) -> None:
    """``count(*shapes_and_args, out_shape=…) -> elementwise operations`` for each op in ``names``."""

    def factory(rules: CountingRules) -> Callable[..., int]:
        def f(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
            return rules.total(0, elementwise=count(*args, out_shape=out_shape, **kwargs))

        return f

    for packet in _packets(names):
        ELEMENTWISE_FORMULAS[packet] = factory


def _per_output(k: int) -> Callable[..., int]:
    return lambda *args, out_shape=None, **kwargs: k * _numel(out_shape)


def _per_input(k: int) -> Callable[..., int]:
    return lambda *args, out_shape=None, **kwargs: k * _numel(args[0])


# One operation per output element.
_register("""add add_ sub sub_ rsub mul mul_ div div_ neg neg_ abs abs_ relu relu_ threshold threshold_
    threshold_backward hardtanh hardtanh_ hardtanh_backward leaky_relu leaky_relu_ leaky_relu_backward elu
    elu_ elu_backward gelu gelu_ gelu_backward silu silu_ silu_backward sigmoid sigmoid_ sigmoid_backward
    tanh tanh_
    tanh_backward exp exp_ log log_ log1p expm1 sqrt sqrt_ rsqrt rsqrt_ pow pow_ reciprocal reciprocal_ square
    clamp clamp_ clamp_min clamp_min_ clamp_max clamp_max_ minimum maximum where masked_fill masked_fill_
    softplus softplus_backward hardswish hardswish_ hardswish_backward hardsigmoid hardsigmoid_
    hardsigmoid_backward mish mish_ mish_backward addcmul addcmul_ addcdiv addcdiv_ lerp lerp_ sin cos erf
    sign sgn floor ceil round eq ne gt lt ge le logical_not logical_and logical_or _prelu_kernel
    _prelu_kernel_backward glu glu_backward log_sigmoid_forward log_sigmoid_backward fmod remainder xlogy""",
          _per_output(1))
# Reductions: one operation per input element (var/std: subtract, square, add).
_register("sum mean amax amin max min prod cumsum argmax argmin nansum", _per_input(1))
_register("var std var_mean std_mean logsumexp", _per_input(3))
_register("linalg_vector_norm norm", _per_input(2))
# Softmax: max, subtract, exp, sum, divide; its backward y·(g − Σ g·y): 4.
_register("_softmax _safe_softmax _log_softmax", _per_input(5))
_register("_softmax_backward_data _log_softmax_backward_data", _per_input(4))
# Dropout at train time: the scale (mask generation is random-number work, not arithmetic).
_register("native_dropout", _per_input(1))
_register("native_dropout_backward", _per_input(2))
# Embedding gradient: one add per gradient element scattered into the table.
_register("embedding_dense_backward", _per_input(1))
# Losses (the loss is part of the step when a loss_fn is given).
_register("nll_loss_forward nll_loss2d_forward", lambda x, target, *a, **k: _numel(target))
_register("nll_loss_backward nll_loss2d_backward", lambda g, x, target, *a, **k: _numel(target))
_register("mse_loss", _per_input(3))
_register("mse_loss_backward", lambda g, x, *a, **k: 2 * _numel(x))


# ---------------------------------------------------------------- normalisation (fvcore's estimates)


def _norm(x: Any, affine: bool, training: bool = True) -> int:
    per = (5 if affine else 4) if training else (2 if affine else 1)
    return per * _numel(x)


_register("native_layer_norm", lambda x, shape, w, *a, **k: _norm(x, w is not None))
_register("native_group_norm", lambda x, w, *a, **k: _norm(x, w is not None))
_register("native_batch_norm", lambda x, w, b, rm, rv, training, *a, **k: _norm(x, w is not None, training))
_register("_native_batch_norm_legit_no_training", lambda x, w, *a, **k: _norm(x, w is not None, False))


def _bn_legit(x: Any, w: Any, b: Any, *args: Any, **kwargs: Any) -> int:
    # two overloads: (…, running_mean, running_var, training, …) and .no_stats (…, training, …)
    training = args[0] if isinstance(args[0], bool) else args[2]
    return _norm(x, w is not None, training)


_register("_native_batch_norm_legit", _bn_legit)
_register("native_layer_norm_backward",
          lambda g, x, shape, mean, rstd, w, *a, **k: 2 * _norm(x, w is not None))
_register("native_batch_norm_backward", lambda g, x, w, *a, **k: 2 * _norm(x, w is not None))
_register("native_group_norm_backward", lambda g, x, mean, rstd, w, *a, **k: 2 * _norm(x, w is not None))


# ---------------------------------------------------------------- pooling: one op per window element


def _window(kernel: Any, x: Any) -> int:
    spatial = len(x) - 2 if len(x) > 2 else 1
    kernel = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
    return int(prod(kernel)) if len(kernel) == spatial else int(kernel[0]) ** spatial


_register("max_pool2d_with_indices max_pool3d_with_indices avg_pool2d avg_pool3d",
          lambda x, kernel, *a, out_shape=None, **k: _numel(out_shape) * _window(kernel, x))
_register("avg_pool2d_backward avg_pool3d_backward",
          lambda g, x, kernel, *a, **k: _numel(g) * _window(kernel, x))
_register("max_pool2d_with_indices_backward max_pool3d_with_indices_backward adaptive_max_pool2d_backward",
          lambda g, *a, **k: _numel(g))
_register("_adaptive_avg_pool2d _adaptive_avg_pool3d adaptive_max_pool2d", _per_input(1))
_register("_adaptive_avg_pool2d_backward _adaptive_avg_pool3d_backward", lambda g, x, *a, **k: _numel(x))


# ---------------------------------------------------------------- no arithmetic: 0 by definition
# Views, copies, layout changes, allocation, random fills, gathers. Listed with their call counts in the
# profile (category "data"), so that a 0 is never silent.
ZERO_COST_OPS: frozenset[Any] = frozenset(_packets("""
    view _unsafe_view reshape _reshape_alias t t_ transpose transpose_ permute expand expand_as squeeze
    squeeze_
    unsqueeze unsqueeze_ select select_backward slice slice_backward narrow unbind split split_with_sizes
    unsafe_split unsafe_split_with_sizes chunk unfold as_strided as_strided_ alias detach detach_ lift_fresh
    lift_fresh_copy clone copy_ _to_copy contiguous cat stack empty empty_like empty_strided new_empty
    new_empty_strided new_zeros new_ones new_full zeros zeros_like ones ones_like full full_like fill_ zero_
    scalar_tensor arange embedding index_select gather index constant_pad_nd roll flip repeat bernoulli_
    bernoulli uniform_ normal_ rand randn randint rand_like randn_like _local_scalar_dense diagonal
    im2col pixel_shuffle pixel_unshuffle channel_shuffle resize_ set_ sym_size sym_stride sym_numel
    sym_storage_offset is_contiguous is_same_size _has_compatible_shallow_copy_type view_as_real
    view_as_complex
    upsample_nearest2d upsample_nearest1d"""))
