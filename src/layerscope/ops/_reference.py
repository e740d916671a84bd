"""Pure-torch linear scans, differentiated by autograd: a sequential loop and the log-space method."""

from __future__ import annotations

import torch

from .._errors import ConfigError
from ..kernels._scan import accumulation_dtype
from ._shapes import broadcast_inputs

Tensor = torch.Tensor


def linear_scan_sequential(a: Tensor, b: Tensor, h0: Tensor | None = None, dim: int = 1) -> Tensor:
    """``h_t = a_t·h_{t−1} + b_t`` along ``dim`` by a Python loop over t (the reference).

    Same arguments and result as :func:`layerscope.ops.linear_scan`; accumulates in float32 (float64
    for float64 inputs). T small ops per call: slow for long sequences.
    """
    a, b, dim = broadcast_inputs(a, b, dim)
    acc = accumulation_dtype(a.dtype)
    if a.shape[dim] == 0:
        return torch.empty_like(a)
    # unbind, not a[t]: its backward is one stack, where T selects would each write a full-size gradient
    at, bt = a.to(acc).unbind(dim), b.to(acc).unbind(dim)  # T × [...]
    h = torch.zeros_like(bt[0]) if h0 is None else h0.to(acc).expand_as(bt[0])
    steps = []
    for a_t, b_t in zip(at, bt, strict=True):
        h = a_t * h + b_t
        steps.append(h)
    return torch.stack(steps, dim).to(a.dtype)


def linear_scan_log(a: Tensor, b: Tensor, h0: Tensor | None = None, dim: int = 1) -> Tensor:
    """The log-space method, for ``a > 0`` only (Heinsen, "Efficient parallelization of a ubiquitous
    sequential computation", arXiv:2311.06281, 2023)::

        h_t = exp(A_t) · (h0 + Σ_{s≤t} b_s·exp(−A_s)),   A_t = Σ_{r≤t} log a_r
            = Re exp(A_t + logcumsumexp_s(log b_s − A_s))      (complex log: b may be negative)

    Fully vectorised (cumsum + logcumsumexp), differentiable by autograd. Its relative error grows
    with |A_t| (about ε·|A_t|: ~1e-4 in float32 after 4096 steps of a = 0.8), and its gradient is NaN
    at steps where h0 and every b_s so far are exactly 0. Prefer :func:`linear_scan` unless you need
    a pure-torch path that is parallel over time.
    """
    a, b, dim = broadcast_inputs(a, b, dim)
    if bool((a <= 0).any()):
        raise ConfigError("linear_scan_log needs a > 0 everywhere (log-space); use linear_scan instead")
    cplx = torch.complex128 if accumulation_dtype(a.dtype) == torch.float64 else torch.complex64
    log_a = torch.log(a.to(cplx.to_real())).cumsum(dim)  # A_t
    terms = b
    if h0 is not None:  # h0 is the term of step −1, where A = 0
        shape = list(b.shape)
        shape[dim] = 1
        terms = torch.cat([h0.to(b.dtype).unsqueeze(dim).expand(shape), b], dim)
        log_a = torch.cat([torch.zeros_like(log_a.narrow(dim, 0, 1)), log_a], dim)
    h = torch.exp(log_a + torch.logcumsumexp(torch.log(terms.to(cplx)) - log_a, dim)).real
    if h0 is not None:
        h = h.narrow(dim, 1, b.shape[dim])
    return h.to(a.dtype)
