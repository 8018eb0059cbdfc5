"""Build a model from a name and its arguments: the one registry of architectures.

An architecture registers itself where it is defined (``@register_model("lenet5")`` on the class or
on a small factory), as timm does; ``models/__init__.py`` imports every architecture module, so
adding one is one file plus one import line. ``torchvision:NAME``, ``timm:NAME`` and
``path/to/file.py:factory`` build models from outside neurotomy (:mod:`neurotomy.models.sources`).

Every model :func:`build_model` returns carries ``neurotomy_meta`` (the name and the arguments it
was built from), so it can be saved and rebuilt without the caller writing any metadata;
:func:`rebuild_model` builds exactly what a checkpoint recorded.

Example:
    >>> model = build_model("vgg11_bn", 3, 100, 32)
    >>> model.neurotomy_meta.arch, model.neurotomy_meta.arch_args
    ('vgg11_bn', {'in_channels': 3, 'num_classes': 100, 'input_size': 32})
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from neurotomy.checkpoint import ModelMeta
from neurotomy.errors import ModelError
from neurotomy.models.sources import build_source_model, prepare_source, split_source
from neurotomy.registry import Registry

ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry(
    "model", ModelError, hint="or torchvision:NAME, timm:NAME, path/to/file.py:factory "
                              "(see `neurotomy zoo` for trained ones)")

# the shape a registered architecture is built for when the caller gives none (our reference CNNs
# are for 28×28 grayscale images with 10 classes)
DEFAULT_SHAPE = {"in_channels": 1, "num_classes": 10, "input_size": 28}


def register_model(name: str | None = None, **tags: Any) -> Callable:
    """Decorator: register an architecture — a class or a factory taking ``in_channels``,
    ``num_classes``, ``input_size`` and keyword arguments of its own — under ``name``, so that
    ``build_model(name, ...)``, every command's MODEL and a saved checkpoint know it (a
    checkpoint records the name and the arguments; the defining module must be imported before
    the checkpoint is loaded)."""
    return ARCHITECTURES.register(name, **tags)


def build_model(name: str, in_channels: int | None = None, num_classes: int | None = None,
                input_size: int | None = None, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A freshly initialised model (``pretrained``: torchvision/timm weights from the local cache),
    with ``neurotomy_meta`` recording how to build it again.

    ``name`` is a registered architecture (shape default 1 channel, 10 classes, 28 px),
    ``torchvision:NAME``, ``timm:NAME`` or ``path/to/file.py:factory``.

    Example:
        >>> build_model("resnet20", in_channels=1, num_classes=10, input_size=28).fc.out_features
        10
    """
    if split_source(name) is None:
        given = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size}
        args = {k: int(v if v is not None else DEFAULT_SHAPE[k]) for k, v in given.items()}
        if pretrained:
            raise ModelError(f"--pretrained applies to torchvision: and timm: models, not {name!r}")
        return rebuild_model(name, {**args, **kwargs})
    arch, args = prepare_source(name, in_channels, num_classes, input_size, **kwargs)
    model = build_source_model(arch, pretrained=pretrained, **args) if pretrained else rebuild_model(arch, args)
    model.neurotomy_meta = ModelMeta(arch=arch, arch_args=args)
    return model


def rebuild_model(arch: str, arch_args: dict[str, Any]) -> nn.Module:
    """Exactly the architecture a checkpoint recorded (``arch``, ``arch_args``), random weights,
    with ``neurotomy_meta`` set to them."""
    if split_source(arch) is not None:
        model = build_source_model(arch, **arch_args)
    else:
        model = ARCHITECTURES.get(arch)(**arch_args)
    model.neurotomy_meta = ModelMeta(arch=arch, arch_args=dict(arch_args))
    return model
