"""Small VGGs with batch norm (Simonyan & Zisserman 2015), for small images: VGG-11 and VGG-16.

Plain networks: no shortcuts, every conv block is conv 3×3 + BN + ReLU; widths are VGG's scaled by
``width``, and the 2×2 max-pools stop once the map is 1×1 (a 28×28 input takes four of the five).
VGG-16 is the modularity paper's main subject (Lu et al., ECCV 2022); its conv blocks are what
:func:`neurotomy.models.anatomy.plain_blocks` finds and layer pruning removes.

Example:
    >>> build = lambda cls: cls(1, 10, 28)
    >>> [sum(isinstance(m, nn.Conv2d) for m in build(c).modules()) for c in (VGG11BN, VGG16BN)]
    [8, 13]
"""

from __future__ import annotations

import torch
from torch import nn

from neurotomy.models.registry import register_model

# The layouts of VGG-11 and VGG-16 (configurations A and D); "M" is a 2×2 max-pool, numbers are
# output channels before the width multiplier.
VGG11_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class PlainVGG(nn.Module):
    """A VGG of ``layout`` whose widths are scaled by ``width`` and whose pools stop at 1×1:
    ``features`` (conv, BN, ReLU, …, max-pool), global average pool, one Linear classifier."""

    layout: tuple = VGG11_LAYOUT

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                 width: float = 0.25) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = in_channels, input_size
        for item in self.layout:
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


@register_model("vgg11_bn")
class VGG11BN(PlainVGG):
    """VGG-11-BN (8 conv blocks).

    Example:
        >>> VGG11BN(1, 10, 28)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    layout = VGG11_LAYOUT


@register_model("vgg16_bn")
class VGG16BN(PlainVGG):
    """VGG-16-BN (13 conv blocks); at the default width 0.25 its channels run 16 … 128.

    Example:
        >>> VGG16BN(1, 10, 28)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    layout = VGG16_LAYOUT
