import json

import pytest
import torch
from torch import nn

from layerscope import DataError
from layerscope._probe import Probe
from layerscope.report import ProbeResult


def _result(partial=False):
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU())
    with Probe(model, stats=("moments",)) as probe:
        model(torch.randn(2, 1, 6, 6))
    return probe.result(partial=partial)


def test_json_round_trip_without_the_model(tmp_path):
    res = _result(partial=True)
    (path,) = res.save(tmp_path, formats=("json",))
    data = json.loads(path.read_text())
    assert data["schema_version"] == "1.0" and data["partial"] is True
    assert data["environment"]["torch"] == torch.__version__
    back = ProbeResult.load(tmp_path)
    assert back.to_dict() == res.to_dict()
    assert back.summary() == res.summary()


def test_non_finite_numbers_become_null():
    res = _result()
    res.layers["0"].stats["moments"]["mean"] = float("nan")
    assert res.to_dict()["layers"]["0"]["stats"]["moments"]["mean"] is None


def test_bad_reports_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no report at"):
        ProbeResult.load(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read report"):
        ProbeResult.load(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"schema_version": "9.0", "layers": {}}))
    with pytest.raises(DataError, match=r"schema version 9\.0 is not supported"):
        ProbeResult.load(tmp_path)


def test_save_leaves_no_temporary_files(tmp_path):
    _result().save(tmp_path, formats=("json",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_written_files_are_readable_by_others_as_with_open(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        (path,) = _result().save(tmp_path, formats=("json",))
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
