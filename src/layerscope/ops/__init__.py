"""Differentiable operators with native / Triton / torch kernels behind them.

``linear_scan(a, b, h0=None, dim=1)``: ``h_t = a_t·h_{t−1} + b_t`` along ``dim``, forward and backward.
``linear_scan_sequential`` (a plain loop, the reference) and ``linear_scan_log`` (log-space, a > 0 only)
are pure torch and differentiate through autograd.
"""

from ._reference import linear_scan_log, linear_scan_sequential
from .linear_scan import linear_scan

__all__ = ["linear_scan", "linear_scan_log", "linear_scan_sequential"]
