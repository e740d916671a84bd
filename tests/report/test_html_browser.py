"""The HTML report in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python
package — no browser download): no console error, no network request, sections and plots present,
the table sorts, a hostile layer name stays text. Saves a screenshot to test-artifacts/report.png.

Skipped when /usr/bin/chromium is missing; when Chromium is there but Playwright cannot be imported
the test *fails*, so that CI (which installs both) never skips it silently.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

try:
    from .test_html import XSS, build_result
except ImportError:  # tests/report is not a package: rootdir-relative import
    from test_html import XSS, build_result

CHROMIUM = os.environ.get("LAYERSCOPE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]  # small /dev/shm in containers
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
MAIN_SECTIONS = ("overview", "layers", "spectra", "states", "spatial", "impact", "correlation", "crossmodal",
                 "config")

pytestmark = pytest.mark.browser


def _sync_playwright():
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set LAYERSCOPE_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # Chromium is installed: a missing driver is a broken set-up, not a skip
        pytest.fail(f"Chromium is installed but Playwright is not importable ({exc}); pip install -e .[dev]")
    return sync_playwright


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    sync_playwright = _sync_playwright()
    out = tmp_path_factory.mktemp("html_report")
    build_result().save(out)
    events = {"requests": [], "console": [], "errors": [], "dialogs": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("request", lambda r: events["requests"].append(r.url))
            page.on("console", lambda m: events["console"].append((m.type, m.text)))
            page.on("pageerror", lambda e: events["errors"].append(str(e)))
            page.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
            url = (out / "report.html").as_uri()
            page.goto(url, wait_until="load")
            yield page, events, url
        finally:
            browser.close()


def test_loads_without_errors_or_network(browser_page) -> None:
    page, events, url = browser_page
    page.wait_for_timeout(200)  # let any late request or error surface
    assert events["errors"] == []
    assert [m for m in events["console"] if m[0] in ("error", "warning")] == []
    assert all(u == url or u.startswith("data:") for u in events["requests"]), events["requests"]
    assert url in events["requests"]


def test_sections_and_plots_are_present(browser_page) -> None:
    page, _, _ = browser_page
    for section in MAIN_SECTIONS:
        assert page.locator(f"section#{section} h2").is_visible(), section
    drawn = page.evaluate("""() => Array.from(document.querySelectorAll('svg'))
        .filter(s => s.querySelector('path[d]:not([d=""])') && s.getBoundingClientRect().width > 0).length""")
    assert drawn >= 5
    assert page.locator("section#spectra svg.lineplot path.series").count() >= 1


def _column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(
        f"#layer-table tbody tr td:nth-child({index + 1})", "cells => cells.map(c => c.dataset.sort)")


def test_table_sorts_by_a_clicked_column(browser_page) -> None:
    page, _, _ = browser_page
    headers = page.eval_on_selector_all("#layer-table thead th", "hs => hs.map(h => h.textContent.trim())")
    mean = next(i for i, h in enumerate(headers) if h.startswith("mean"))
    header = page.locator("#layer-table thead th").nth(mean)
    header.click()
    values = [float(v) for v in _column(page, mean)]
    assert values == sorted(values) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    values = [float(v) for v in _column(page, mean)]
    assert values == sorted(values, reverse=True) and header.get_attribute("aria-sort") == "descending"
    name = 1 + next(i for i, h in enumerate(headers[1:]) if h.startswith("layer"))
    page.locator("#layer-table thead th").nth(name).click()
    names = _column(page, name)
    assert names == sorted(names, key=lambda s: s.lower()) or names == sorted(names)
    page.locator("#layer-table thead th").nth(0).click()  # back to forward order for the screenshot


def test_hostile_layer_name_renders_as_text(browser_page) -> None:
    page, events, _ = browser_page
    assert events["dialogs"] == []
    assert page.locator("img").count() == 0
    cell = page.locator("#layer-table .lname", has_text=XSS)
    assert cell.count() == 1 and cell.first.is_visible()
    assert cell.first.text_content() == XSS


def test_hover_read_out_shows_a_value(browser_page) -> None:
    page, _, _ = browser_page
    hit = page.locator("section#spectra rect.hit").first  # the band-power heatmap
    hit.scroll_into_view_if_needed()
    box = hit.bounding_box()
    page.mouse.move(box["x"] + 3, box["y"] + 3)
    tip = page.locator("#tip")
    assert tip.is_visible() and ": " in tip.text_content()


def test_screenshot_is_saved(browser_page) -> None:
    page, _, _ = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")
    target = ARTIFACTS / "report.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    assert shutil.which("chromium") or Path(CHROMIUM).exists()
