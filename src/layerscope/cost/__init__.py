"""Cost of a model: parameters, FLOPs (on ``torch.utils.flop_counter``), time, memory, gradient flow —
for one model (``profile``) or several measured in one run (``compare``)."""

from __future__ import annotations

from .compare import Comparison, ModelSummary, compare
from .conventions import FLOP_CONVENTIONS, FlopConvention
from .flops import FlopReport, count_flops
from .parameters import ParameterReport, count_parameters
from .profile import LayerProfile, ModelProfile, profile

__all__ = [
    "FLOP_CONVENTIONS",
    "Comparison",
    "FlopConvention",
    "FlopReport",
    "LayerProfile",
    "ModelProfile",
    "ModelSummary",
    "ParameterReport",
    "compare",
    "count_flops",
    "count_parameters",
    "profile",
]
