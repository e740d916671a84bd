"""``layerscope._loading``: FILE.py:FACTORY specs and the errors a user can act on."""

from __future__ import annotations

import sys

import pytest
from torch import nn

from layerscope import ConfigError, ModelError
from layerscope._loading import load_model, load_model_factory


def _write(tmp_path, text: str, name: str = "net.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_loads_a_factory_that_imports_its_neighbour(tmp_path):
    _write(tmp_path, "from torch import nn\nWIDTH = 7\n", "helper_mod_for_test.py")
    path = _write(tmp_path, "from torch import nn\nfrom helper_mod_for_test import WIDTH\n"
                            "def build():\n    return nn.Linear(3, WIDTH)\n")
    before = list(sys.path)
    model = load_model_factory(f"{path}:build")
    assert isinstance(model, nn.Linear) and model.out_features == 7
    assert sys.path == before


@pytest.mark.parametrize(("spec", "error", "message"), [
    ("net.py", ConfigError, "expected FILE.py:FACTORY"),
    ("net.txt:build", ConfigError, "must be a .py file"),
    ("missing.py:build", ModelError, "model file not found"),
])
def test_bad_specs(tmp_path, spec, error, message):
    with pytest.raises(error, match=message):
        load_model_factory(str(tmp_path / spec))


@pytest.mark.parametrize(("source", "message"), [
    ("def other():\n    pass\n", r"defines no 'build'; callables defined there: other"),
    ("build = 3\n", "is a int, not a function"),
    ("def build():\n    raise ValueError('no weights')\n", r"build\(\) in .* raised ValueError: no weights"),
    ("def build():\n    return 42\n", "returned a int, not a torch.nn.Module"),
    ("import no_such_package_xyz\n", "importing .* failed: ModuleNotFoundError"),
])
def test_bad_files(tmp_path, source, message):
    path = _write(tmp_path, source)
    with pytest.raises(ModelError, match=message):
        load_model_factory(f"{path}:build")


def test_load_model_takes_builtin_names_and_files(tmp_path):
    name, model = load_model("mlp")
    assert name == "mlp" and isinstance(model, nn.Module)
    path = _write(tmp_path, "from torch import nn\ndef build():\n    return nn.ReLU()\n")
    assert load_model(f"{path}:build")[0] == "net:build"
    with pytest.raises(ConfigError, match=r"unknown model 'nope'.*FILE\.py:FACTORY"):
        load_model("nope")
