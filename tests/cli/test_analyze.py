"""`layerscope analyze` end to end: the demo, the user's own model and data, and every bad input."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from layerscope.cli import main

MODEL_PY = textwrap.dedent(
    """
    import torch
    from torch import nn

    calls = {"n": 0}

    class Stop(nn.Module):
        def forward(self, x):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return x * 1.0

    def build_model():
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def build_interrupting():
        return nn.Sequential(nn.Linear(6, 8), Stop(), nn.ReLU())

    def build_broken():
        raise RuntimeError("weights file is corrupt")
    """
)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "net.py").write_text(MODEL_PY)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(40, 6)).astype(np.float32), y=rng.integers(0, 3, 40))
    np.savez(tmp_path / "wrong.npz", x=rng.normal(size=(10, 5)).astype(np.float32))
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 6), np.float32))
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    return tmp_path


def analyze(*args):
    return main(["analyze", "--no-progress", *args])


def test_default_demo_writes_a_full_report(tmp_path, capsys):
    assert analyze("--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "fc2" in out and "wrote" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["partial"] is False and report["config"]["model"].startswith("digits-cnn")
    conv1 = report["layers"]["conv1"]
    assert conv1["meta"]["shape"] == [16, 8, 8] and conv1["meta"]["samples"] == 449
    assert set(conv1["stats"]) == {"moments", "coverage", "histogram", "spectrum", "spatial", "covariance",
                                   "connectivity", "impact"}
    assert conv1["stats"]["impact"]["samples"] == 449  # the ζ pass saw every test sample
    assert {"health", "coverage", "temporal", "connectivity", "crossmodal"} <= set(report["model"])
    assert (tmp_path / "report.html").exists()
    nc = report["model"]["coverage"]["nc"]["0.5"]
    assert f"NC τ=0.5 {100 * nc['covered'] / nc['total']:.0f}%" in out  # the footer agrees with the JSON
    cross = report["model"]["crossmodal"]["channels"]
    assert f"cross-modal: {cross['significant_count']} of {cross['tests']}" in out


def test_sequence_demo_finds_the_planted_frequencies(tmp_path):
    from layerscope.zoo.sequence import FREQUENCIES

    assert analyze("--model", "sequence-cnn", "--stats", "moments,spectrum", "--no-impact",
                   "--out", str(tmp_path)) == 0
    spectrum = json.loads((tmp_path / "report.json").read_text())["layers"]["conv1"]["stats"]["spectrum"]
    step = spectrum["frequencies"][1] - spectrum["frequencies"][0]
    found = [p["frequency"] for p in spectrum["peaks"]]
    for f in FREQUENCIES:  # each planted frequency is a spectral peak of the first layer, within one bin
        assert min(abs(f - g) for g in found) <= step, (f, found)


def test_users_model_and_data(files, tmp_path, capsys):
    out = tmp_path / "run1"
    rc = analyze("--model", f"{files}/net.py:build_model", "--data", f"{files}/data.npz", "--batch-size", "16",
                 "--batches", "2", "--layers", "0,2", "--out", str(out))
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["layers"]) == ["0", "2"]
    assert report["layers"]["0"]["meta"]["samples"] == 32  # 2 batches of 16


def test_sample_budgets_reach_the_accumulators(files, tmp_path):
    out = tmp_path / "budgets"
    assert analyze("--model", f"{files}/net.py:build_model", "--data", f"{files}/data.npz", "--batch-size", "16",
                   "--batches", "2", "--layers", "0", "--stats", "spatial,covariance", "--no-impact",
                   "--spatial-samples", "all", "--covariance-samples", "4", "--out", str(out)) == 0
    stats = json.loads((out / "report.json").read_text())["layers"]["0"]["stats"]
    assert stats["spatial"]["samples"] == 32 and stats["spatial"]["samples_per_batch"] is None
    assert stats["covariance"]["observations"] == 8 and stats["covariance"]["samples_per_batch"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batches", "0"], "--batches must be at least 1"),
        (["--layers", "conv9*"], "'conv9*' matches no module.*Available layers: conv1 (Conv2d)"),
        (["--model", "{d}/missing.py:build_model", "--data", "{d}/data.npz"], "missing.py"),
        (["--model", "{d}/net.py:no_such_factory", "--data", "{d}/data.npz"], "no_such_factory"),
        (["--model", "{d}/net.py:build_broken", "--data", "{d}/data.npz"], "weights file is corrupt"),
        (["--model", "{d}/net.py:build_model", "--data", "{d}/wrong.npz"], "failed in layer '0'"),
        (["--model", "{d}/net.py:build_model", "--data", "{d}/empty.npz"], "holds no samples"),
        (["--model", "{d}/net.py:build_model", "--data", "{d}/junk.npz"], "cannot read"),
        (["--model", "{d}/net.py:build_model", "--data", "{d}/nothing.npz"], "does not exist"),
        (["--model", "{d}/net.py:build_model"], "--data is required"),
        (["--thresholds", "a,b"], "--thresholds takes comma-separated numbers"),
        (["--covariance-samples", "0"], "--covariance-samples takes a number of at least 1 or 'all'"),
        (["--spatial-samples", "half"], "--spatial-samples takes a number of at least 1 or 'all'"),
        (["--stats", "moments,nope"], "unknown statistic 'nope'"),
        (["--device", "banana"], "device 'banana' is not a device torch knows"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(files, tmp_path, capsys, args, message):
    args = [a.format(d=files) for a in args]
    assert analyze(*args, "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0]
    assert first.startswith("layerscope analyze: error:")
    import re

    assert re.search(re.escape(message).replace(r"\.\*", ".*"), first), first
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys):
    assert analyze("--batches", "0", "--debug") == 2
    assert "Traceback" in capsys.readouterr().err


def test_interrupted_run_writes_a_partial_report(files, tmp_path):
    out = tmp_path / "partial"
    rc = analyze("--model", f"{files}/net.py:build_interrupting", "--data", f"{files}/data.npz",
                 "--batch-size", "8", "--out", str(out))
    assert rc == 130
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is True
    # batches 1 and 2 went through; batch 3 stopped inside layer 1, after layer 0 had seen it
    assert report["layers"]["0"]["meta"]["samples"] == 24
    assert report["layers"]["2"]["meta"]["samples"] == 16


def test_exit_code_from_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "layerscope", "analyze", "--batches", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("layerscope analyze: error: --batches must be at least 1")
    assert "Traceback" not in proc.stderr


def test_api_raises_the_same_message():
    from layerscope import ConfigError
    from layerscope._analyze import analyze as analyze_api

    with pytest.raises(ConfigError, match="batches must be at least 1"):
        analyze_api(torch.nn.Linear(2, 2), torch.randn(4, 2), batches=0)
