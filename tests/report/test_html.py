"""The HTML report without a browser: escaping, missing data, re-rendering from JSON, atomic writes,
bounded size. ``build_result`` is shared with the browser test (test_html_browser.py)."""

from __future__ import annotations

import html as html_lib
import math
import os
import re
from html.parser import HTMLParser

import pytest
import torch
from torch import nn

import layerscope.report.html as report_html
from layerscope._analyze import analyze
from layerscope._impact import attach_impact, impact_pass
from layerscope.analysis import LAYER_ANALYSES as ANALYSES
from layerscope.cli import main
from layerscope.report import SINKS, LayerResult, ProbeResult
from layerscope.report.html import SECTIONS, render, render_dict, svg, write_html
from layerscope.report.html._fmt import NOT_COMPUTED

XSS = "<img src=x onerror=alert(1)>"
STATS = ("moments", "coverage", "histogram", "spectrum", "spatial", "covariance", "connectivity")


class _Tiny(nn.Module):
    """Sequence layers (Welch spectra), an image layer (radial spectrum) and one layer named XSS."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 5, padding=2)
        self.act = nn.ReLU()
        self.add_module(XSS, nn.Conv1d(8, 16, 3, padding=1))
        self.img = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(16 * 64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 64)
        h = getattr(self, XSS)(self.act(self.conv(x)))  # (N, 16, 64)
        image = self.img(h.mean(1).reshape(-1, 1, 8, 8))  # (N, 4, 8, 8)
        return self.head(h.flatten(1)) + image.mean((1, 2, 3))[:, None]


def _signals(n: int = 96) -> torch.Tensor:
    t = torch.arange(64, dtype=torch.float32)
    tone = torch.sin(2 * math.pi * 0.125 * t)  # a known frequency: 1/8 cycles per sample
    return tone + 0.3 * torch.randn(n, 3, 64)


def _criterion(covered: int, total: int) -> dict:
    return {"covered": covered, "total": total, "excluded_neurons": 0, "fraction": covered / total}


def _synthetic(stat: str, channels: int, rng: torch.Generator) -> dict:
    """Stand-ins (in the analyses' JSON shape) for statistics that have no registered analysis yet."""
    if stat == "histogram":
        edges = torch.linspace(-2, 2, 33)
        return {"counts": torch.randint(0, 50, (32,), generator=rng).tolist(), "edges": edges.tolist()}
    if stat == "coverage":
        covered = int(torch.randint(0, channels + 1, (), generator=rng))
        return {"neurons": channels, "inputs": 96, "layers": 1, "top_k": 2, "kmnc_sections": 10,
                "nc": {"0": _criterion(covered, channels), "0.5": _criterion(covered // 2, channels)},
                "tknc": _criterion(min(channels, 2 * covered), channels),
                "kmnc": _criterion(covered, 10 * channels),
                "nbc": _criterion(1, 2 * channels), "snac": _criterion(1, channels)}
    return {}


def build_result(partial: bool = False) -> ProbeResult:
    """A real analysis of a small model — every registered statistic, ζ from a real backward pass, the
    model-level analyses re-run — plus stand-ins for statistics whose analysis is not registered."""
    torch.manual_seed(0)
    model, x = _Tiny(), _signals()
    y = torch.randint(0, 5, (x.shape[0],))
    stats = [s for s in STATS if s in ANALYSES]
    result = analyze(model, (x, y), batch_size=32, stats=stats, reference_data=_signals(64),
                     config={"model": f"tiny {XSS}", "data": "sinusoids at 1/8 + noise"})
    rng = torch.Generator().manual_seed(1)
    for layer in result.layers.values():
        for stat in ("histogram", "coverage"):
            if stat not in layer.stats:
                layer.stats[stat] = _synthetic(stat, layer.meta["shape"][0], rng)
    result = attach_impact(result, impact_pass(model, (x, y), batch_size=32))
    if "coverage" not in result.model:
        result.model["coverage"] = _synthetic("coverage", 100, rng)
    health = result.model["health"]
    health["layers"][XSS] = {"status": "warn", "flags": [{"flag": XSS, "level": "warn", "detail": XSS}]}
    statuses = [h["status"] for h in health["layers"].values()]
    health["counts"] = {s: statuses.count(s) for s in ("ok", "warn", "error")}
    result.partial = partial
    return result


@pytest.fixture(scope="module")
def result() -> ProbeResult:
    return build_result()


@pytest.fixture(scope="module")
def page(result: ProbeResult) -> str:
    return render(result)


# -- escaping --------------------------------------------------------------------------------------
class _Elements(HTMLParser):
    """Every start tag of a page with its attributes, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    return parser


def test_layer_names_and_user_text_are_escaped(page: str) -> None:
    parsed = _parse(page)
    assert not [t for t, _ in parsed.tags if t == "img"]  # the name did not become an element
    assert [t for t, _ in parsed.tags if t == "script"] == ["script"]  # ours, nothing injected
    handlers = [(t, a) for t, attrs in parsed.tags for a in attrs if a.startswith("on")]
    assert handlers == []
    assert sum(XSS in chunk for chunk in parsed.text) >= 5  # shown as text: table, flags, plots, config …


def test_svg_text_is_escaped() -> None:
    plot = svg.heatmap([[0.1, None]], [XSS], ['"quoted" & <b>'], label=XSS)
    assert {t for t, _ in _parse(plot).tags} <= {"svg", "g", "path", "text", "rect", "title"}
    assert "&lt;img src=x onerror=alert(1)&gt;" in plot and "&quot;quoted&quot; &amp; &lt;b&gt;" in plot


def test_page_makes_no_network_reference(page: str) -> None:
    urls = re.findall(r"""(?:src|href|action|xlink:href)\s*=\s*["']([^"']*)""", page)
    assert all(u.startswith("#") for u in urls), urls
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) == {"http://www.w3.org/2000/svg"}
    assert "default-src &#x27;none&#x27;" in page  # the CSP forbids any fetch


# -- sections --------------------------------------------------------------------------------------
@pytest.mark.parametrize("section", SECTIONS, ids=lambda f: f.__name__)
def test_every_section_renders_without_data(section) -> None:
    bare_layer = {"layers": {"a": {"meta": {}, "stats": {"spectrum": {"kind": "none"}, "covariance": {}}}}}
    for data in ({}, {"layers": {}, "model": {}, "config": {}}, bare_layer):
        part = section(data)
        assert part.id and part.title and part.body
        has_something = data is bare_layer and section.__name__ == "layer_table"
        assert (NOT_COMPUTED in part.body) != has_something


@pytest.mark.parametrize("section", SECTIONS, ids=lambda f: f.__name__)
def test_every_section_renders_its_data(section, result: ProbeResult) -> None:
    assert NOT_COMPUTED not in section(result.to_dict()).body


def test_sections_survive_malformed_values() -> None:
    bad = {"meta": {"shape": "x"}, "stats": {
        "moments": {"mean": "NaN", "activation_rate": {}}, "histogram": {"counts": [1, 2], "edges": [0]},
        "coverage": {"nc": {"0.5": None}, "tknc": "x"},
        "spectrum": {"frequencies": [0, 1], "mean_psd": [None, None], "band_fraction": 3, "peaks": [1],
                     "state_counts": {"dead": "x"}, "bands": {"edges": [[0]]}},
        "spatial": {"layer_grid": [[1, 2], [3]], "top_channels": [{"grid": "x"}, 3]},
        "covariance": {"correlation": [[1]], "redundant_pairs": [[0]], "effective_rank": None},
        "impact": {"per_channel": {"zeta": [None, "x"]}},
        "connectivity": {"available": True, "strongest": "x"}}}
    crossmodal = {"channels": {"significant": [None, {"q_value": "x", "ci95": [1]}],
                               "blocks": {"a": {"rho": [[1]], "temporal_features": []}, "b": None}}}
    model = {"crossmodal": crossmodal, "connectivity": {"pairs": 1}}
    page = render_dict({"layers": {"L": bad}, "model": model})
    assert page.endswith("</html>\n") and "could not be rendered" not in page


def test_a_failing_section_costs_only_that_section(monkeypatch, caplog) -> None:
    def broken(data):
        raise KeyError("surprise")

    monkeypatch.setattr(report_html, "SECTIONS", (*SECTIONS[:2], broken, *SECTIONS[2:]))
    page = render_dict({"layers": {}})
    assert "could not be rendered (KeyError: &#x27;surprise&#x27;)" in page and "Run configuration" in page
    assert "section 'broken' could not be rendered" in caplog.text


def test_partial_runs_are_marked(result: ProbeResult) -> None:
    result.partial = True
    try:
        page = render(result)
    finally:
        result.partial = False
    assert "Partial run." in page and "(partial)</title>" in page
    assert "Partial run." not in render(result)


def test_table_has_a_row_per_layer_in_forward_order(result: ProbeResult, page: str) -> None:
    table = page.split('id="layer-table"')[1].split("</table>")[0]
    names = re.findall(r'<span class="lname">(.*?)</span>', table)
    assert [html_lib.unescape(n) for n in names] == list(result.layers)


def test_missing_numbers_render_as_dashes() -> None:
    moments = {"mean": float("nan"), "std": None}
    layer = LayerResult(meta={"name": "a", "order": 0}, stats={"moments": moments})
    page = render(ProbeResult(config={}, layers={"a": layer}))
    row = page.split('id="layer-table"')[1].split("</tr>")[1]
    assert row.count(">—<") >= 2 and "nan" not in row.lower()


# -- re-rendering, writing -------------------------------------------------------------------------
def test_rerender_from_json_equals_first_render(result: ProbeResult, page: str, tmp_path) -> None:
    result.save(tmp_path, formats=("json",))
    assert render(ProbeResult.load(tmp_path)) == page
    assert render(result) == page  # deterministic


def test_sink_is_registered_and_save_writes_both(result: ProbeResult, tmp_path) -> None:
    assert SINKS.get("html") is write_html
    paths = result.save(tmp_path)
    assert {p.name for p in paths} == {"report.html", "report.json"}
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == render(result)


def test_write_is_atomic(result: ProbeResult, tmp_path, monkeypatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("previous report")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_html(result, tmp_path)
    assert target.read_text() == "previous report"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary file left
    monkeypatch.undo()
    assert write_html(result, tmp_path) == target and target.read_text(encoding="utf-8") == render(result)


def test_cli_report_rerenders_from_json(result: ProbeResult, tmp_path, capsys) -> None:
    result.save(tmp_path / "run", formats=("json",))
    assert main(["report", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "report.html").read_text(encoding="utf-8") == render(result)
    assert main(["report", str(tmp_path / "run" / "report.json"), "--out", str(tmp_path / "copy"),
                 "--format", "html,json"]) == 0
    assert {p.name for p in (tmp_path / "copy").iterdir()} == {"report.html", "report.json"}


def test_cli_report_errors(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no report at" in capsys.readouterr().err
    build_result().save(tmp_path, formats=("json",))
    assert main(["report", str(tmp_path), "--format", "pdf"]) == 2
    assert "unknown report format 'pdf'" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()


# -- bounded size ----------------------------------------------------------------------------------
def _wide_result(layers: int = 40, channels: int = 256) -> ProbeResult:
    rng = torch.Generator().manual_seed(0)
    out = {}
    for i in range(layers):
        corr = torch.rand(channels, channels, generator=rng) * 2 - 1
        meta = {"name": f"block{i}.conv", "order": i, "shape": [channels, 8, 8]}
        out[meta["name"]] = LayerResult(meta=meta, stats={
            "moments": {"mean": 0.1, "std": 1.0, "channels": channels},
            "histogram": _synthetic("histogram", channels, rng),
            "spectrum": {"kind": "radial", "frequencies": [j / 16 for j in range(9)], "mean_psd": [1.0] * 9,
                         "band_fraction": {"a": 0.5, "b": 0.5}, "state": "broadband",
                         "state_counts": {"broadband": channels}},
            "spatial": {"layer_grid": torch.rand(8, 8, generator=rng).tolist(), "top_channels": [
                {"channel": c, "grid": torch.rand(8, 8, generator=rng).tolist()} for c in range(4)]},
            "covariance": {"channels": channels, "correlation": corr.tolist(), "effective_rank": 3.0},
            "impact": {"per_channel": {"zeta": torch.randn(channels, generator=rng).tolist()}},
            "connectivity": {"available": True, "shape": [channels, channels], "strongest": [
                {"in": 0, "out": 1, "strength": 2.0}] * 20},
        })
    return ProbeResult(config={"model": "wide"}, layers=out)


def test_wide_model_page_stays_small() -> None:
    page = render(_wide_result())
    assert len(page.encode("utf-8")) < 1_500_000
    assert "Showing 8 of 40 layers&#x27; heatmaps" in page
    assert "the first 64 of 256 channels in the matrix" in page
    assert "Showing 24 of 40 layers" in page  # spatial grids and ζ histograms


# -- plots -----------------------------------------------------------------------------------------
def test_heatmap_draws_one_path_per_colour_level_and_marks_missing_cells() -> None:
    plot = svg.heatmap([[0.0, 1.0, None], [1.0, 1.0, 0.5]], ["r0", "r1"], ["a", "b", "c"], vmin=0, vmax=1)
    assert f'<path stroke="{svg.MISSING}" d="M2 0.5h1"/>' in plot  # the missing cell, in grey
    assert 'data-v="0,1,—,1,1,0.5"' in plot
    top = svg.color((svg.LEVELS - 0.5) / svg.LEVELS)
    assert f'<path stroke="{top}" d="M1 0.5h1m-2 1h2"/>' in plot  # one path per level, equal runs merged
    assert plot.count("<path") == 4  # levels 0, 16, 31 and missing


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (-3.2, 7.9), (1e-5, 3e-5), (5, 5)])
def test_nice_ticks_cover_the_range(lo: float, hi: float) -> None:
    ticks = svg.nice_ticks(lo, hi)
    assert ticks and all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks)
    assert ticks == sorted(ticks) and len(ticks) <= 11


def test_colour_scales_are_valid_hex() -> None:
    for palette in svg.PALETTES:
        for t in (-1, 0, 0.3, 0.5, 1, 2):
            assert re.fullmatch(r"#[0-9a-f]{6}", svg.color(t, palette))
    assert svg.color(0.5, "diverging") == "#f7f7f7"


def test_assets_ship_with_the_package() -> None:
    assert "function sortBy" in report_html._asset("report.js")
    assert ":root" in report_html._asset("report.css")


def test_log_ticks_are_decades_or_one_two_five() -> None:
    assert svg.log_ticks(-2.0, 1.0) == [(-2.0, "10⁻²"), (-1.0, "10⁻¹"), (0.0, "10⁰"), (1.0, "10¹")]
    assert [t for t, _ in svg.log_ticks(-8.0, 4.0)] == [-8, -6, -4, -2, 0, 2, 4]  # at most ~7 ticks
    assert [label for _, label in svg.log_ticks(-3.0, -2.0)] == ["0.001", "0.002", "0.005", "0.01"]
