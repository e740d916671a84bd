import pytest
import torch

from layerscope import ConfigError
from layerscope._device import resolve_device


def test_usable_devices_pass_through():
    assert resolve_device(None) is None
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["banana", "cuda:x"])
def test_unknown_device_strings_are_clear_errors(spec):
    with pytest.raises(ConfigError, match="is not a device torch knows"):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ConfigError, match="sees no CUDA device here: use --device cpu"):
        resolve_device("cuda")
