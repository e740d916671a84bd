"""Parameter counts against brute-force sums over the distinct parameter tensors."""

from __future__ import annotations

import torch
from torch import nn

from layerscope.cost import count_parameters
from layerscope.zoo import build


def test_resnet18_parameter_count():
    assert count_parameters(build("resnet18")).total == 11_689_512  # He et al. 2016 / torchvision


def test_totals_trainable_buffers_and_bytes_by_dtype():
    model = nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20), nn.Linear(20, 5).to(torch.float16))
    model[0].requires_grad_(False)
    r = count_parameters(model)
    assert r.total == (10 * 20 + 20) + 2 * 20 + (20 * 5 + 5)
    assert r.trainable == 2 * 20 + (20 * 5 + 5) and r.frozen == 10 * 20 + 20
    assert r.bytes_by_dtype == {"float32": 4 * (220 + 40), "float16": 2 * 105}
    assert r.buffers == 20 + 20 + 1  # running mean, running var, num_batches_tracked
    assert r.buffer_bytes_by_dtype == {"float32": 4 * 40, "int64": 8}


def test_per_layer_own_and_total():
    model = nn.Sequential(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), nn.Linear(4, 2, bias=False))
    r = count_parameters(model).by_layer
    assert (r["0.0"].own, r["0"].own, r["0"].total) == (16, 0, 16)
    assert (r["1"].own, r[""].total) == (8, 24)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.head = nn.Linear(16, 100, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx):
        return self.head(self.emb(idx))


def test_tied_parameters_counted_once_and_flagged():
    r = count_parameters(Tied())
    assert r.total == 100 * 16  # not 2 × 1600
    assert [s.names for s in r.shared] == [["emb.weight", "head.weight"]]
    assert r.by_layer["emb"].own == 1600 and r.by_layer["head"].own == 0


def test_module_used_twice_counted_once():
    lin = nn.Linear(5, 5)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_parameters(model).total == 30
