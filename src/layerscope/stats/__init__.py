"""Streaming accumulators. Each file registers one statistic in :data:`ACCUMULATORS`."""

from . import (  # noqa: F401 (registration)
    connectivity,
    covariance,
    coverage,
    histogram,
    impact,
    moments,
    spatial,
    spectrum,
)
from ._protocol import ACCUMULATORS, Accumulator

__all__ = ["ACCUMULATORS", "Accumulator"]
