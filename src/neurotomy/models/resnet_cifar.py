"""CIFAR-style ResNets (He et al. 2016, §4.2): 3 stages of 16/32/64 channels, depth 6n+2.

ResNet-20 (n=3) and ResNet-56 (n=9) are the models the filter-pruning papers report on
(Li et al. 2017, HRank, CHIP, FPGM). Down-sampling shortcuts are 1×1 conv + BN ("option B"):
torch-pruning traces them, whereas option A's zero-padding lambda cannot be pruned structurally.
"""

from __future__ import annotations

import torch
from torch import nn

from neurotomy.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Example:
        >>> CifarResNet(20, in_channels=1)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, depth: int = 20, in_channels: int = 3, num_classes: int = 10,
                 input_size: int = 32) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110)")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        planes, layers = 16, []
        for stage, width in enumerate((16, 32, 64)):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(planes, width, stride))
                planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("resnet20")
def resnet20(**kwargs) -> CifarResNet:
    """ResNet-20 (He et al. 2016, §4.2: n = 3 blocks per stage)."""
    return CifarResNet(20, **kwargs)


@register_model("resnet56")
def resnet56(**kwargs) -> CifarResNet:
    """ResNet-56 (n = 9 blocks per stage)."""
    return CifarResNet(56, **kwargs)
