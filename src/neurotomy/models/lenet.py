"""LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, sized to any small input."""

from __future__ import annotations

import torch
from torch import nn

from neurotomy.models.registry import register_model


@register_model("lenet5")
class LeNet5(nn.Module):
    """conv(6,5×5) → pool → conv(16,5×5) → pool → fc120 → fc84 → classes.

    Both convs pad by 2 so 8×8 digits survive the two poolings.

    Example:
        >>> LeNet5(in_channels=1, num_classes=10, input_size=28)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(2),
        )
        side = input_size // 2 // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
