"""Bar chart of a comparison metric with error bars (matplotlib, optional:
``pip install 'layerscope[plots]'``).

Drawn on a ``matplotlib.figure.Figure`` with the Agg canvas — no ``pyplot``, so no global backend or figure
state is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import ConfigError
from .._io import atomic_write_bytes
from .._optional import require

if TYPE_CHECKING:
    from .compare import Comparison

_LABELS = {"forward_ms": "forward time (ms)", "backward_ms": "backward time (ms)",
           "step_ms": "step time (ms)"}


def bar_chart(c: Comparison, metric: str, path: Path) -> Path:
    if metric not in _LABELS:
        raise ConfigError(f"metric must be one of {', '.join(_LABELS)}, not {metric!r}")
    if path.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"the chart is written as .png or .svg, not {path.suffix or 'no suffix'!r} "
                          f"({path})")
    require("matplotlib", "the comparison chart")
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [(m.name, getattr(m, metric)) for m in c.models if getattr(m, metric) is not None]
    names = [n for n, _ in rows]
    med = [s.median for _, s in rows]
    # asymmetric error bars: the 95% bootstrap CI of the median (IQR where the CI is undefined)
    lo = [s.median - (s.ci_low if s.ci_low is not None else s.q1) for _, s in rows]
    hi = [(s.ci_high if s.ci_high is not None else s.q3) - s.median for _, s in rows]
    fig = Figure(figsize=(max(4.0, 1.2 * len(rows) + 2), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(names, med, yerr=[lo, hi], capsize=4, color="#4C72B0")
    ax.set_ylabel(_LABELS[metric])
    ax.set_title(f"median and 95% CI over {c.settings['repeats']} interleaved rounds", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower())
    return atomic_write_bytes(path, buf.getvalue())
