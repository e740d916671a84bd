"""The Python examples in docs/profile.md and docs/compare.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import layerscope

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)


@pytest.mark.parametrize("doc", ["profile.md", "compare.md"])
def test_python_examples_run(doc, tmp_path, monkeypatch):
    assert layerscope.profile and layerscope.compare  # the public names the docs use
    pytest.importorskip("matplotlib")
    blocks = _python_blocks(doc)
    assert blocks, f"no python example in docs/{doc}"
    monkeypatch.chdir(tmp_path)  # the examples write into runs/
    for code in blocks:
        exec(compile(code, f"docs/{doc}", "exec"), {})
    assert any(tmp_path.joinpath("runs").rglob("*.json"))
