"""ResNet-18 (He et al., 2016, "Deep Residual Learning", Table 1), built locally.

``stem="imagenet"``: 7×7/2 conv + 3×3/2 max-pool, for 224×224 inputs (1.82 GMACs, 11,689,512 parameters
with 1000 classes). ``stem="cifar"``: one 3×3/1 conv and no pool, the usual variant for 32×32 inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from . import MODELS


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=False)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000, stem: str = "imagenet", in_channels: int = 3) -> None:
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', not {stem!r}")
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        widths, strides = (64, 128, 256, 512), (1, 2, 2, 2)
        c_in, stages = 64, []
        for c_out, stride in zip(widths, strides, strict=True):
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 3, H, W) -> (B, 64, H/4, W/4) imagenet stem
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # -> (B, 512, H/32, W/32)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # -> (B, num_classes)


@MODELS.register("resnet18")
def resnet18(num_classes: int = 1000) -> ResNet18:
    return ResNet18(num_classes, stem="imagenet")


@MODELS.register("resnet18-cifar")
def resnet18_cifar(num_classes: int = 10) -> ResNet18:
    return ResNet18(num_classes, stem="cifar")
