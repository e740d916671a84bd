"""Streaming accumulators. Each file registers one statistic in :data:`ACCUMULATORS`."""

from ._protocol import ACCUMULATORS, Accumulator
from . import moments as moments  # noqa: E402,I001  (registration order)

__all__ = ["ACCUMULATORS", "Accumulator"]
