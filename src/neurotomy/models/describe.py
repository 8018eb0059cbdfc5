"""How to rebuild a model nobody described: the describers ``save_checkpoint(model, path)`` asks
when a model carries no ``neurotomy_meta``.

Each describer proposes an ``arch`` and ``arch_args`` and keeps the proposal only when a model
built from it (on the meta device: no memory, no time) has exactly the same parameter and buffer
names and shapes. They cover a timm model (``pretrained_cfg`` names its architecture), a
torchvision classifier (the builders of its class's module are tried in turn) and an instance of a
class defined in an importable ``.py`` file whose constructor needs no arguments.

Example:
    >>> import torchvision
    >>> describe_torchvision(torchvision.models.resnet18(num_classes=7)).arch_args
    {'in_channels': 3, 'num_classes': 7, 'input_size': 224}
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neurotomy.checkpoint import DESCRIBERS, ModelMeta
from neurotomy.errors import ModelError
from neurotomy.models.sources import build_source_model, file_sha256, load_factory


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _first_conv_channels(model: nn.Module) -> int | None:
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    return int(convs[0].in_channels) if convs else None


def _num_classes(model: nn.Module) -> int | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return int(linears[-1].out_features) if linears else None


def _matches(model: nn.Module, arch: str, arch_args: dict[str, Any]) -> bool:
    try:
        with torch.device("meta"):
            candidate = build_source_model(arch, **arch_args)
    except Exception:  # a candidate that cannot be built with these arguments is simply not this model
        return False
    return _shapes(candidate) == _shapes(model)


@DESCRIBERS.register("timm")
def describe_timm(model: nn.Module) -> ModelMeta | None:
    """A model made by ``timm.create_model`` (it records its architecture in ``pretrained_cfg``)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not type(model).__module__.startswith("timm.") or not isinstance(cfg, dict) or not cfg.get("architecture"):
        return None
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    args: dict[str, Any] = {"in_channels": _first_conv_channels(model) or 3,
                            "num_classes": int(getattr(model, "num_classes", _num_classes(model) or 1000)),
                            "input_size": size}
    arch = f"timm:{cfg['architecture']}"
    candidates = [args]
    img_size = _timm_img_size(model)
    if img_size is not None and img_size != size:  # a ViT built for another input size
        candidates.insert(0, {**args, "input_size": img_size, "img_size": img_size})
    for candidate in candidates:
        if _matches(model, arch, candidate):
            return ModelMeta(arch=arch, arch_args=candidate)
    return None


def _timm_img_size(model: nn.Module) -> int | None:
    patch = getattr(model, "patch_embed", None)
    size = getattr(patch, "img_size", None)
    return int(size[0]) if isinstance(size, (tuple, list)) else None


@DESCRIBERS.register("torchvision")
def describe_torchvision(model: nn.Module) -> ModelMeta | None:
    """A torchvision classifier: the first builder of its class's module whose model has the same
    tensors (resnet18 and resnet34 share a class, not their shapes)."""
    module = type(model).__module__
    if not module.startswith("torchvision.models"):
        return None
    import torchvision

    args = {"in_channels": _first_conv_channels(model) or 3, "num_classes": _num_classes(model) or 1000,
            "input_size": 224}
    for name in torchvision.models.list_models():
        if torchvision.models.get_model_builder(name).__module__ == module:
            if _matches(model, f"torchvision:{name}", args):
                return ModelMeta(arch=f"torchvision:{name}", arch_args=args)
    return None


@DESCRIBERS.register("file-class")
def describe_file_class(model: nn.Module) -> ModelMeta | None:
    """An instance of a class defined in an importable ``.py`` file (not a running script) whose
    constructor takes no required arguments: recorded as ``file:/abs/file.py:ClassName``."""
    cls = type(model)
    module = sys.modules.get(cls.__module__)
    source = getattr(module, "__file__", None)
    if (cls.__module__ == "__main__" or cls.__module__.startswith(("torch.", "torchvision.", "timm."))
            or not source or not source.endswith(".py") or "<locals>" in cls.__qualname__):
        return None
    required = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        return None
    path = Path(source).resolve()
    arch = f"file:{path}:{cls.__qualname__}"
    try:
        load_factory(f"{path}:{cls.__qualname__}")  # import the file here, not on the meta device
    except ModelError:
        return None
    args = {"sha256": file_sha256(path), "factory_kwargs": {}}
    if not _matches(model, arch, args):
        return None
    shape = {k: v for k, v in (("in_channels", _first_conv_channels(model)), ("num_classes", _num_classes(model)),
                               ("input_size", getattr(model, "input_size", None))) if v is not None}
    return ModelMeta(arch=arch, arch_args={**shape, **args})


__all__ = ["describe_file_class", "describe_timm", "describe_torchvision"]
