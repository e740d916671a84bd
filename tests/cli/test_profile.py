"""``layerscope profile`` end to end, in process: exit codes, messages, files."""

from __future__ import annotations

import json

import pytest

from layerscope.cli import main

FAST = ["--repeats", "2", "--warmup", "0", "--no-progress"]


def test_profile_builtin_writes_files(tmp_path, capsys):
    assert main(["profile", "--model", "mlp", "--batch-size", "4", *FAST, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "layerscope profile" in out and "FLOPs forward" in out and "profile.json" in out
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["parameters"]["total"] == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert data["inputs"] == [{"shape": [4, 64], "dtype": "float32"}]
    assert data["flops"]["forward"] == 4 * (2 * (64 * 128 + 128 * 128 + 128 * 10) + 2 * 128 + 2 * 128 + 10)
    assert (tmp_path / "profile.md").read_text().startswith("# layerscope profile: MLP")


def test_profile_macs_no_bias_matches_the_formula(tmp_path):
    args = ["profile", "--model", "mlp", "--macs", "--no-bias", "--no-elementwise", "--forward-only", *FAST]
    assert main([*args, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "profile.json").read_text())
    assert data["flops"]["forward"] == 64 * 128 + 128 * 128 + 128 * 10 and data["flops"]["backward"] is None
    assert data["flops"]["unit"] == "MACs"


def test_profile_from_a_file(tmp_path, capsys):
    path = tmp_path / "net.py"
    path.write_text("from torch import nn\ndef build():\n"
                    "    return nn.Sequential(nn.Linear(5, 3), nn.Tanh())\n")
    assert main(["profile", "--model", f"{path}:build", "--input-shape", "2,5", *FAST]) == 0
    assert "Sequential" in capsys.readouterr().out


def test_profile_on_the_meta_device(capsys):
    assert main(["profile", "--model", "resnet18", "--device", "meta", "--batch-size", "1", *FAST]) == 0
    out = capsys.readouterr().out
    assert "skipped: timing" in out and "11,689,512" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", "missing.py:build", "--input-shape", "1,2"], "model file not found"),
    (["--model", "mlp", "--input-shape", "1,a"], "--input-shape takes positive integers"),
    (["--model", "mlp", "--input-shape", "1,0"], "--input-shape takes positive integers"),
    (["--model", "resnet18-cifar", "--input-shape", "1,1,32,32"], r"layer 'conv1' \(Conv2d\)"),
    (["--model", "mlp", "--repeats", "-1"], "repeats and warmup must be >= 0"),
    (["--model", "mlp", "--depth", "-1"], "--depth must be >= 0"),
])
def test_profile_errors_exit_2_with_a_message(args, message, capsys):
    assert main(["profile", *args, *FAST[-1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerscope profile: error:")
    assert pytest.importorskip("re").search(message, err)


def test_profile_file_errors(tmp_path, capsys):
    raising = tmp_path / "raising.py"
    raising.write_text("def build():\n    raise RuntimeError('checkpoint missing')\n")
    assert main(["profile", "--model", f"{raising}:build", "--input-shape", "1,2", "--no-progress"]) == 2
    assert "raised RuntimeError: checkpoint missing" in capsys.readouterr().err
    assert main(["profile", "--model", f"{raising}:make", "--input-shape", "1,2", "--no-progress"]) == 2
    assert "defines no 'make'" in capsys.readouterr().err
    assert main(["profile", "--model", f"{raising}:build", "--no-progress"]) == 2
    assert "raised RuntimeError" in capsys.readouterr().err
    ok = tmp_path / "ok.py"
    ok.write_text("from torch import nn\ndef build():\n    return nn.Linear(2, 2)\n")
    assert main(["profile", "--model", f"{ok}:build", "--no-progress"]) == 2
    assert "--input-shape is required" in capsys.readouterr().err
