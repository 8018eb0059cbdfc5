"""A small VGG-11 with batch norm (Simonyan & Zisserman 2015), for small images."""

from __future__ import annotations

import torch
from torch import nn

from neurotomy.models.registry import register_model

# VGG-11's layout; "M" is a 2×2 max-pool, numbers are output channels before the width multiplier.
VGG11_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


@register_model("vgg11_bn")
class VGG11BN(nn.Module):
    """VGG-11-BN whose widths are scaled by ``width`` and whose pools stop at 1×1.

    Example:
        >>> VGG11BN(1, 10, 28)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                 width: float = 0.25) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = in_channels, input_size
        for item in VGG11_LAYOUT:
            if item == "M":
                if side >= 2:  # small inputs cannot take all five poolings
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                continue
            out = max(1, int(item * width))
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
