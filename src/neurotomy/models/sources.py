"""Architectures from outside neurotomy: ``torchvision:NAME``, ``timm:NAME`` and a user's own
``path/to/file.py:factory``, each behind one builder in :data:`SOURCES`.

A builder takes the name after the source's prefix and the model's shape (``in_channels``,
``num_classes``, ``input_size``) plus the source's own arguments, and returns a fresh model. What a
checkpoint records (``arch = "torchvision:resnet18"``, ``"timm:convnext_atto"`` or
``"file:/abs/net.py:make"``, and ``arch_args``) is exactly what the builder is called with again
when the checkpoint is loaded, so a rebuilt model has the same modules as the saved one.

A file factory is recorded with the file's absolute path and SHA-256: loading a checkpoint whose
file changed since warns (one line) and rebuilds from the current file; a file that is gone is an
error that names it. The factory is called with those of ``in_channels``/``num_classes``/
``input_size`` that the user gave *and* its signature accepts (``factory_kwargs``, recorded).

Pretrained weights (``pretrained=True``) are used only from the local cache (torch hub for
torchvision, the Hugging Face cache for timm); when absent, the error says where they would be.

Example:
    >>> model = build_source_model("torchvision:resnet18", in_channels=1, num_classes=10)
    >>> model.conv1.in_channels, model.fc.out_features
    (1, 10)
    >>> split_source("examples/net.py:make"), split_source("timm:resnet18"), split_source("lenet5")
    (('file', 'examples/net.py:make'), ('timm', 'resnet18'), None)
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch
from torch import nn

from neurotomy.errors import ModelError, NeurotomyWarning
from neurotomy.registry import Registry

SOURCES: Registry[Callable[..., nn.Module]] = Registry(
    "model source", ModelError,
    hint="(MODEL is zoo:NAME, a checkpoint, torchvision:NAME, timm:NAME or file.py:factory)")

# torchvision classifiers with auxiliary heads: built without them, so the model is a plain classifier
_NO_AUX = {"googlenet": {"aux_logits": False, "init_weights": True}, "inception_v3": {"aux_logits": False,
                                                                                       "init_weights": True}}


def split_source(spec: str) -> tuple[str, str] | None:
    """``(source, name)`` of an external model spec, or None for a registry name or a checkpoint.

    ``path/file.py:factory`` (as a user writes it) and ``file:/abs/file.py:factory`` (as a
    checkpoint records it) are both the ``file`` source."""
    spec = str(spec)
    head, sep, rest = spec.partition(":")
    if sep and head in SOURCES and head != "file":
        return head, rest
    if head == "file" and sep:
        return "file", rest
    path, sep, factory = spec.rpartition(":")
    if sep and path.endswith(".py") and factory.isidentifier():
        return "file", spec
    return None


def build_source_model(spec: str, **kwargs: Any) -> nn.Module:
    """The model an external ``spec`` names (see :func:`split_source`), called with ``kwargs``
    exactly (as :func:`prepare_source` made them, or as a checkpoint recorded them); random
    weights unless ``pretrained=True``."""
    parsed = split_source(spec)
    if parsed is None:
        raise ModelError(f"{spec!r} is not torchvision:NAME, timm:NAME or path/to/file.py:factory")
    source, name = parsed
    return SOURCES.get(source)(name, **kwargs)


def prepare_source(spec: str, in_channels: int | None = None, num_classes: int | None = None,
                   input_size: int | None = None, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """``(arch, arch_args)`` for an external model as a user names it: the name a checkpoint
    records (a file factory by absolute path, ``file:/abs/net.py:make``) and the arguments its
    builder is called with, now and when the checkpoint is loaded. Shape values not given are the
    source's defaults (torchvision: 3 channels, 1000 classes, 224 px; timm: its config); a file
    factory receives only those given that its signature accepts, and ``kwargs``.

    Example:
        >>> prepare_source("torchvision:resnet18", num_classes=10)
        ('torchvision:resnet18', {'in_channels': 3, 'num_classes': 10, 'input_size': 224})
    """
    source, name = split_source(spec) or (None, spec)
    shape = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size}
    if source == "file":
        path, factory, fn = load_factory(name)
        factory_kwargs = {**accepted_kwargs(fn, shape), **kwargs}
        known = {k: int(v) for k, v in shape.items() if v is not None}
        return f"file:{path}:{factory}", {**known, "sha256": file_sha256(path), "factory_kwargs": factory_kwargs}
    if source == "timm":
        sized = timm_defaults(name, input_size)
        return spec, {"in_channels": int(in_channels or 3), "num_classes": int(num_classes or 1000), **sized, **kwargs}
    if source == "torchvision":
        size = int(input_size or 224)
        return spec, {"in_channels": int(in_channels or 3), "num_classes": int(num_classes or 1000),
                      "input_size": size, **kwargs}
    raise ModelError(f"{spec!r} is not torchvision:NAME, timm:NAME or path/to/file.py:factory")


# ---------------------------------------------------------------- torchvision

@SOURCES.register("torchvision")
def torchvision_model(name: str, in_channels: int = 3, num_classes: int = 1000, input_size: int = 224,
                      pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A torchvision classifier; the first conv adapted to ``in_channels`` (pretrained RGB kernels
    summed or repeated, as timm does), the classifier replaced when ``num_classes`` differs from
    the pretrained one; ViT and MaxViT built for ``input_size`` (they fix it at construction)."""
    import torchvision

    if name not in torchvision.models.list_models():
        raise ModelError(f"torchvision has no model {name!r}{_close(name, torchvision.models.list_models())}; "
                         "see torchvision.models.list_models()")
    kwargs = {**_NO_AUX.get(name, {}), **_torchvision_sized(name, int(input_size)), **kwargs}
    if not pretrained:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    else:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        if not cached.exists():
            raise ModelError(f"no pretrained weights for torchvision:{name} in the local cache ({cached}); copy "
                             f"{os.path.basename(weights.url)} there from a machine with internet, or drop "
                             "--pretrained")
        kwargs.pop("init_weights", None)
        model = torchvision.models.get_model(name, weights=weights, **kwargs)
        if num_classes != len(weights.meta["categories"]):
            _replace_classifier(model, num_classes)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model


def _torchvision_sized(name: str, size: int) -> dict[str, Any]:
    """The builder argument of torchvision models whose input size is fixed at construction
    (ViT: ``image_size``; MaxViT: ``input_size``), when ``size`` is not their default 224."""
    if size == 224:
        return {}
    if name.startswith("vit_"):
        return {"image_size": size}
    if name.startswith("maxvit_"):
        return {"input_size": (size, size)}
    return {}


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("cannot give this pretrained model a new number of classes: it has no Linear classifier")
    name, last = linears[-1]
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child,
            nn.Linear(last.in_features, num_classes, bias=last.bias is not None))


@torch.no_grad()
def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d by one reading ``in_channels``; trained RGB kernels are summed
    (grayscale) or tiled and rescaled (more channels), as timm's ``adapt_input_conv`` does."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                new = nn.Conv2d(in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                                child.dilation, child.groups, child.bias is not None, child.padding_mode)
                weight = child.weight
                if in_channels == 1:
                    new.weight.copy_(weight.sum(1, keepdim=True))
                else:
                    reps = -(-in_channels // weight.shape[1])
                    new.weight.copy_(weight.repeat(1, reps, 1, 1)[:, :in_channels] * weight.shape[1] / in_channels)
                if child.bias is not None:
                    new.bias.copy_(child.bias)
                setattr(parent, child_name, new)
                return


# ---------------------------------------------------------------- timm

def _timm():
    try:
        import timm
    except ImportError:
        raise ModelError("timm is not installed; pip install 'neurotomy[timm]' (or pip install timm)") from None
    return timm


@SOURCES.register("timm")
def timm_model(name: str, in_channels: int = 3, num_classes: int = 1000, input_size: int | None = None,
               pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A timm model (``timm.create_model``); models with a fixed input size (ViTs) are built for
    ``input_size`` (``img_size``, which the checkpoint then records)."""
    timm = _timm()
    if not timm.is_model(name):
        raise ModelError(f"timm has no model {name!r}{_close(name, timm.list_models())}; see timm.list_models()")
    overlay = {}
    if pretrained:
        overlay = {"pretrained_cfg_overlay": {"file": _cached_timm_weights(name)}}
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels,
                                 **overlay, **kwargs)
    except TypeError as exc:
        raise ModelError(f"timm:{name} does not accept these arguments ({exc})") from None


def timm_defaults(name: str, input_size: int | None) -> dict[str, Any]:
    """Arguments a timm model needs for ``input_size`` beyond the shape (``img_size`` for models
    whose input size is fixed), and its default input size."""
    timm = _timm()
    if not timm.is_model(name):
        raise ModelError(f"timm has no model {name!r}{_close(name, timm.list_models())}; see timm.list_models()")
    cfg = timm.models.get_pretrained_cfg(name) or {}
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    default = int(cfg.get("input_size", (3, 224, 224))[-1])
    fixed = cfg.get("fixed_input_size") and input_size and input_size != default
    extra = {"img_size": int(input_size)} if fixed else {}
    return {"input_size": int(input_size or default), **extra}


def _cached_timm_weights(name: str) -> str:
    from huggingface_hub import try_to_load_from_cache

    cfg = _timm().models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None)
    for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename) if repo else None
        if isinstance(found, str):
            return found
    url = getattr(cfg, "url", None)
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cached.exists():
            return str(cached)
    raise ModelError(f"no pretrained weights for timm:{name} in the local cache (Hugging Face {repo or '—'}); "
                     "download them where there is internet (timm.create_model(..., pretrained=True)) and copy the "
                     "cache here, or drop --pretrained")


# ---------------------------------------------------------------- path/to/file.py:factory

_IMPORTED: dict[tuple[str, str], ModuleType] = {}


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _import_file(path: Path) -> ModuleType:
    """Import a Python file once per content (a changed file is imported afresh)."""
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; give MODEL as path/to/file.py:factory")
    digest = file_sha256(path)
    key = (str(path), digest)
    if key not in _IMPORTED:
        module_name = f"neurotomy_user_{digest[:16]}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look classes up here
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise ModelError(f"{path}: cannot import it ({type(exc).__name__}: {exc})") from None
        _IMPORTED[key] = module
    return _IMPORTED[key]


def load_factory(spec: str) -> tuple[Path, str, Callable[..., Any]]:
    """``path/to/file.py:factory`` → (absolute path, factory name, the callable)."""
    path_text, _, factory = str(spec).rpartition(":")
    path = Path(path_text).expanduser().resolve()
    module = _import_file(path)
    if not hasattr(module, factory):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise ModelError(f"{path} defines no {factory!r}; callables defined there: {', '.join(defined) or 'none'}")
    fn = getattr(module, factory)
    if not callable(fn):
        raise ModelError(f"{path}:{factory} is a {type(fn).__name__}, not a callable returning an nn.Module")
    return path, factory, fn


def accepted_kwargs(fn: Callable[..., Any], given: dict[str, Any]) -> dict[str, Any]:
    """Those of ``given`` (values not None) that ``fn``'s signature accepts by name."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in given.items() if v is not None and (takes_any or k in params)}


def call_factory(spec: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = fn(**kwargs)
    except Exception as exc:
        raise ModelError(f"{spec}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned a {type(model).__name__}, not an nn.Module; the factory must return "
                         "the model")
    return model


@SOURCES.register("file")
def file_model(name: str, sha256: str | None = None, factory_kwargs: dict[str, Any] | None = None,
               pretrained: bool = False, **_shape: Any) -> nn.Module:
    """The model ``path/to/file.py:factory`` returns, called with ``factory_kwargs``; with the
    ``sha256`` the file had when a checkpoint recorded it, a changed file warns."""
    if pretrained:
        raise ModelError("--pretrained applies to torchvision: and timm: models; give a file model its weights "
                         "with --weights FILE")
    path_text = name.rpartition(":")[0]
    if sha256 is not None and not Path(path_text).is_file():
        raise ModelError(f"the model's architecture file {path_text} is gone (SHA-256 {sha256[:12]}…); restore it "
                         "or copy it there")
    path, factory, fn = load_factory(name)
    if sha256 is not None and file_sha256(path) != sha256:
        warnings.warn(f"{path} changed since the checkpoint was saved (SHA-256 {sha256[:12]}… → "
                      f"{file_sha256(path)[:12]}…); the architecture is rebuilt from the file as it is now",
                      NeurotomyWarning, stacklevel=2)
    return call_factory(f"{path}:{factory}", fn, dict(factory_kwargs or {}))


def _close(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


__all__ = ["SOURCES", "accepted_kwargs", "build_source_model", "call_factory", "file_model", "file_sha256",
           "load_factory", "prepare_source", "split_source", "timm_defaults", "timm_model", "torchvision_model"]
