"""Build a model from a name and its arguments: the one registry of architectures.

An architecture registers itself where it is defined (``@register_model("lenet5")`` on the class or
on a small factory), as timm does; ``models/__init__.py`` imports every architecture module, so
adding one is one file plus one import line. ``torchvision:NAME`` builds any torchvision
classifier with random weights.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from neurotomy.errors import ModelError
from neurotomy.registry import Registry

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry(
    "model", ModelError, hint="or torchvision:NAME (see `neurotomy zoo` for trained ones)")
register_model = ARCHITECTURES.register


def build_model(name: str, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                **kwargs: Any) -> nn.Module:
    """A freshly initialised model.

    Example:
        >>> build_model("resnet20", in_channels=1, num_classes=10, input_size=28).fc.out_features
        10
    """
    if name.startswith("torchvision:"):
        return _torchvision_model(name.split(":", 1)[1], in_channels, num_classes)
    return ARCHITECTURES.get(name)(in_channels=in_channels, num_classes=num_classes, input_size=input_size,
                                   **kwargs)


def _torchvision_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """A torchvision classifier with random weights, its first conv adapted to ``in_channels``."""
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError:
        raise ModelError(f"torchvision has no model {name!r}; see torchvision.models.list_models()") from None
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None))
                return
