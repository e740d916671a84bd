"""``layerscope compare`` end to end, in process: exit codes, messages, files."""

from __future__ import annotations

import csv
import json

import pytest

from layerscope.cli import main

FAST = ["--repeats", "3", "--warmup", "0", "--no-progress"]


def test_compare_builtins_writes_every_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main(["compare", "--models", "mlp,cnn,lstm,transformer", *FAST, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "layerscope compare" in out and "transformer" in out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["comparison.csv", "comparison.json", "comparison.md", "comparison.png"]
    rows = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    assert [r["model"] for r in rows] == ["mlp", "cnn", "lstm", "transformer"]
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert data["settings"]["order"] == ["mlp", "cnn", "lstm", "transformer"]
    assert data["settings"]["repeats"] == 3
    assert len(data["pairwise"]) == 2 * 6  # step and forward time, every pair


def test_compare_files_with_a_shared_input_shape(tmp_path, capsys):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from torch import nn\ndef build():\n    return nn.Linear(6, 6)\n")
    b.write_text("from torch import nn\ndef build():\n"
                 "    return nn.Sequential(nn.Linear(6, 12), nn.Linear(12, 6))\n")
    out = tmp_path / "out"
    assert main(["compare", "--models", f"{a}:build,{b}:build", "--input-shape", "3,6", *FAST,
                 "--out", str(out), "--chart", "none"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.json", "comparison.md"]
    assert "a:build" in (out / "comparison.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--models", "mlp,mlp"], "names 'mlp' twice"),
    (["--models", "mlp", "--repeats", "1"], "repeats >= 2"),
    (["--models", "mlp,nope"], "unknown model 'nope'"),
    (["--models", ","], "at least one model"),
    (["--models", "mlp,cnn", "--input-shape", "2,64"], r"failed on the example input in layer 'stage1\.0'"),
])
def test_compare_errors_exit_2_with_a_message(args, message, capsys):
    assert main(["compare", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerscope compare: error:")
    assert pytest.importorskip("re").search(message, err)
