"""A small MobileNetV2 (Sandler et al. 2018) for 28–32 px inputs: stride-1 stem, width 0.5."""

from __future__ import annotations

import torch
from torch import nn

from neurotomy.models.registry import register_model

# (expansion t, output channels c, repeats n, first stride s) as in the paper's Table 2, with the
# ImageNet-only early strides removed so small images keep some spatial extent.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


@register_model("mobilenetv2")
class MobileNetV2(nn.Module):
    """Example:
        >>> MobileNetV2(1, 10, 28)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
                 width: float = 0.5) -> None:
        super().__init__()

        def scaled(c: int) -> int:  # keep channel counts multiples of 8, as the paper does
            return max(8, int(c * width + 4) // 8 * 8)

        cin = scaled(32)
        layers: list[nn.Module] = [_conv_bn(in_channels, cin, 3)]
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, scaled(c), s if i == 0 else 1, t))
                cin = scaled(c)
        last = max(320, scaled(1280))
        layers.append(_conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
