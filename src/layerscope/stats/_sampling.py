"""Per-batch sample budgets: the evenly spaced samples that feed an accumulator's costly per-batch work.

An accumulator with a budget of ``k`` samples per batch reads ``x[::step]`` with ``step = ⌈N/k⌉``
(every sample when ``N ≤ k`` or the budget is None): a view, a fixed choice that does not depend on
the data, and the same samples for every accumulator with the same budget. ``spectrum_samples`` and
``covariance_samples`` use it (see those modules for what is estimated from the samples).
"""

from __future__ import annotations

import operator
from typing import Any

from .._errors import ConfigError

DEFAULT_SAMPLES = 8


def check_samples(option: str, value: Any) -> int | None:
    """A budget option as an int ≥ 1, or None for every sample; a clear error otherwise."""
    if value is None:
        return None
    try:
        k = operator.index(value)  # ints and NumPy integers, not 8.5 or "8"
    except TypeError:
        k = 0
    if isinstance(value, bool) or k < 1:
        raise ConfigError(f"{option} must be an integer of at least 1, or None for every sample (got {value!r})")
    return k


def sample_step(n: int, max_samples: int | None) -> int:
    """Stride of the evenly spaced samples ``x[::step]`` that keep at most ``max_samples`` of ``n``."""
    if max_samples is None or n <= max_samples:
        return 1
    return -(-n // max_samples)
