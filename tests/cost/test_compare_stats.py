"""``compare()``: interleaving, statistics against brute-force references, outputs."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from layerscope import ConfigError
from layerscope.cost import compare
from layerscope.cost._stats import pairwise_mann_whitney, summarize


def test_mann_whitney_u_against_brute_force_pair_count():
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(1.0, 0.1, 12), rng.normal(1.1, 0.1, 9), np.r_[rng.normal(1.0, 0.1, 7), [1.0, 1.0]]
    rows = pairwise_mann_whitney("step_ms", {"a": a, "b": b, "c": c})
    assert [(r.a, r.b) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    samples = {"a": a, "b": b, "c": c}
    for r in rows:
        x, y = samples[r.a], samples[r.b]
        u = sum((xi > yi) + 0.5 * (xi == yi) for xi in x for yi in y)  # U of the first sample, by definition
        assert r.u == pytest.approx(u) and r.prob_a_greater == pytest.approx(u / (len(x) * len(y)))
        assert r.median_ratio == pytest.approx(np.median(x) / np.median(y))
    # Benjamini–Hochberg by hand: sort, p·m/rank, running minimum from the largest
    p = np.array([r.p_value for r in rows])
    order = np.argsort(p)
    adj = np.minimum.accumulate((p[order] * len(p) / np.arange(1, len(p) + 1))[::-1])[::-1]
    expected = np.empty_like(adj)
    expected[order] = np.minimum(adj, 1)
    assert [r.p_adjusted for r in rows] == pytest.approx(expected)


def test_bootstrap_ci_brackets_the_median_and_is_reproducible():
    x = np.random.default_rng(0).lognormal(0, 0.3, 25)
    s1, s2 = summarize(x, ci=True, seed=3), summarize(x, ci=True, seed=3)
    assert s1.ci_low <= s1.median <= s1.ci_high and (s1.ci_low, s1.ci_high) == (s2.ci_low, s2.ci_high)
    assert s1.ci_high - s1.ci_low < s1.max - s1.min
    assert summarize([2.0, 2.0, 2.0], ci=True).ci_low == 2.0  # no spread: a point interval, not NaN
    assert summarize([1.0, 2.0], ci=True).ci_low is None  # too few samples for a CI


class Logged(nn.Module):
    def __init__(self, name: str, log: list[str], width: int) -> None:
        super().__init__()
        self.name, self.log = name, log
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        self.log.append(self.name)
        return self.lin(x)


def test_runs_are_interleaved_and_summarised():
    log: list[str] = []
    models = {"A": Logged("A", log, 8), "B": Logged("B", log, 8), "C": Logged("C", log, 8)}
    c = compare(models, torch.randn(4, 8), repeats=4, warmup=2)
    timed = log[-(2 + 4) * 3:]  # after one instrumented profile step per model
    assert timed == ["A", "B", "C"] * 6
    assert [m.name for m in c.models] == ["A", "B", "C"]
    for m in c.models:
        assert m.step_ms.n == 4 and m.step_ms.samples == pytest.approx(
            [f + b for f, b in zip(m.forward_ms.samples, m.backward_ms.samples, strict=False)])
        assert m.parameters == 72 and m.flops_forward == 2 * 4 * 8 * 8 + 4 * 8
    pairs = (("A", "B"), ("A", "C"), ("B", "C"))
    assert {(p.metric, p.a, p.b) for p in c.pairwise} == {
        (metric, a, b) for metric in ("step_ms", "forward_ms") for a, b in pairs}


def test_outputs_markdown_csv_json_and_chart(tmp_path):
    pytest.importorskip("matplotlib")
    c = compare(["mlp", "cnn"], repeats=3, warmup=0)
    md = c.to_markdown()
    assert "| mlp |" in md and "| cnn |" in md and "Mann–Whitney" in md
    rows = list(csv.DictReader(io.StringIO(c.to_csv())))
    assert [r["model"] for r in rows] == ["mlp", "cnn"]
    assert float(rows[0]["step_ms_median"]) == pytest.approx(c.models[0].step_ms.median)
    assert int(rows[1]["parameters"]) == c.models[1].parameters
    data = json.loads(c.to_json())
    assert data["schema"].startswith("layerscope.cost.comparison/") and len(data["models"]) == 2
    paths = c.save(tmp_path, chart="svg")
    assert sorted(p.name for p in paths) == [f"comparison.{s}" for s in ("csv", "json", "md", "svg")]
    assert b"<svg" in (tmp_path / "comparison.svg").read_bytes()[:500]
    assert c.plot(tmp_path / "fwd.png", metric="forward_ms").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_errors():
    x = torch.randn(2, 8)
    with pytest.raises(ConfigError, match="repeats >= 2"):
        compare({"a": nn.Linear(8, 8)}, x, repeats=1)
    with pytest.raises(ConfigError, match="no example input"):
        compare({"a": nn.Linear(8, 8)}, repeats=2)
    with pytest.raises(ConfigError, match=r"not a torch\.nn\.Module"):
        compare({"a": 3}, x, repeats=2)
    with pytest.raises(ConfigError, match="unknown built-in model"):
        compare(["no-such-model"], repeats=2)
    c = compare({"lin": nn.Linear(8, 8)}, x, repeats=2, warmup=0)
    with pytest.raises(ConfigError, match=r"\.png or \.svg"):
        c.plot("chart.pdf")
