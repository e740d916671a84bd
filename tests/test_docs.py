"""The Python examples of every page in docs/ run as written: a page's blocks in order, in one
namespace, in a fresh directory (the pages that read a report find the one the CLI writes first)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerscope.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# a page whose examples read what a command wrote: that command, run first
BEFORE = {
    "analyze.md": ["analyze", "--out", "report", "--no-progress"],
    "report.md": ["analyze", "--out", "run1", "--no-progress"],
}


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_every_page_is_checked():
    assert len(PAGES) >= 9
    assert set(BEFORE) <= {p.name for p in PAGES}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_run(page, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(page)
    if not blocks:
        pytest.skip(f"{page.name} has no Python example")
    monkeypatch.chdir(tmp_path)
    if page.name in BEFORE:
        assert main(BEFORE[page.name]) == 0
    namespace = {"__name__": "__docs__"}
    for code in blocks:
        exec(compile(code, str(page), "exec"), namespace)
