"""MODEL as every command and :func:`neurotomy.load_model` take it, resolved in one place.

=============================  ==========================================================
``zoo:NAME``                    a shipped trained model (``neurotomy zoo``)
``path/to/model.safetensors``   a checkpoint written by neurotomy
``torchvision:NAME``            a torchvision classifier (``--pretrained``: cached weights)
``timm:NAME``                   a timm model (the ``timm`` extra; ``--pretrained`` likewise)
``path/to/file.py:factory``     a user's file and a callable in it returning an ``nn.Module``
``NAME``                        a registered architecture (``neurotomy.register_model``)
=============================  ==========================================================

``weights`` (``--weights FILE``) loads a state dict into any of them; ``in_channels``,
``num_classes``, ``input_size`` give what a fresh model cannot tell (a file factory receives those
its signature accepts). The result is in eval mode and carries ``neurotomy_meta``: saving it
records how to rebuild it.

Example:
    >>> model = resolve_model("torchvision:resnet18", in_channels=1, num_classes=10, input_size=32)
    >>> model.neurotomy_meta.arch, model.neurotomy_meta.input_shape, model.training
    ('torchvision:resnet18', (1, 32, 32), False)
    >>> model_spec_kind("zoo:lenet5-digits"), model_spec_kind("nets/my_net.py:build")
    ('zoo', 'file')
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from neurotomy.errors import ModelError, NeurotomyError
from neurotomy.loading.checks import check_classifier_output
from neurotomy.loading.checkpoints import load_checkpoint
from neurotomy.loading.weights import load_weights
from neurotomy.loading.zoo import zoo_path
from neurotomy.models import ARCHITECTURES, build_model
from neurotomy.models.sources import split_source

SPEC_FORMS = "zoo:NAME, a .safetensors checkpoint, torchvision:NAME, timm:NAME, path/to/file.py:factory"


def model_spec_kind(spec: str | os.PathLike) -> str:
    """Which form ``spec`` has: ``zoo``, ``checkpoint``, ``torchvision``, ``timm``, ``file`` or
    ``architecture`` (without reading or importing anything); an unknown form is a one-line error."""
    text = str(spec)
    if text.startswith("zoo:"):
        return "zoo"
    source = split_source(text)
    if source is not None:
        return source[0]
    if text in ARCHITECTURES:
        return "architecture"
    if Path(text).suffix == ".safetensors" or (Path(text).is_file() and Path(text).suffix != ".py"):
        return "checkpoint"
    if text.endswith(".py") or (text.partition(":")[0].endswith(".py")):
        raise ModelError(f"{text}: name the factory too, as path/to/file.py:factory (a callable returning the "
                         "nn.Module)")
    if Path(text).exists() or os.sep in text:
        return "checkpoint"
    raise ModelError(f"{text!r} is not a model: give {SPEC_FORMS} or an architecture "
                     f"({', '.join(ARCHITECTURES)})")


def check_model_spec(spec: str) -> str:
    """``spec`` if it can name a model (a file spec's file and a checkpoint must exist), else a
    one-line :class:`~neurotomy.errors.ModelError` (what the CLI checks before any work)."""
    kind = model_spec_kind(spec)
    if kind == "zoo":
        zoo_path(spec[4:])
    elif kind == "file":
        path = Path(split_source(spec)[1].rpartition(":")[0])
        if not path.is_file():
            raise ModelError(f"{path}: no such model file; give MODEL as path/to/file.py:factory")
    elif kind in ("torchvision", "timm") and not split_source(spec)[1].strip():
        raise ModelError(f"{spec!r}: name the model, e.g. {kind}:resnet18")
    elif kind == "checkpoint":
        if Path(spec).is_dir():
            raise ModelError(f"{spec}: is a directory; give the .safetensors checkpoint file inside it")
        if not Path(spec).is_file():
            raise ModelError(f"{spec}: no such checkpoint; check the path, or give {SPEC_FORMS}")
    return spec


def resolve_model(spec: str | os.PathLike, *, weights: str | os.PathLike | None = None, pretrained: bool = False,
                  in_channels: int | None = None, num_classes: int | None = None,
                  input_size: int | None = None) -> nn.Module:
    """The model ``spec`` names (see the module docstring), in eval mode, with ``neurotomy_meta``,
    checked with one forward pass to return N × classes logits
    (:func:`~neurotomy.loading.checks.check_classifier_output`)."""
    spec = str(spec)
    kind = model_spec_kind(spec)
    if kind in ("zoo", "checkpoint"):
        if pretrained:
            raise ModelError("--pretrained applies to torchvision: and timm: models; a checkpoint has its weights")
        # a header without an input shape takes the one given; one it records is kept (_check_shape)
        model = load_checkpoint(zoo_path(spec[4:]) if kind == "zoo" else Path(spec), in_channels=in_channels,
                                input_size=input_size)
        _check_shape(model, in_channels, num_classes, spec)
    else:
        model = build_fresh(spec, in_channels, num_classes, input_size, pretrained=pretrained)
        if kind == "file":
            _complete_shape(model, spec)
    if weights is not None:
        load_weights(model, weights)
    check_classifier_output(model.eval(), spec)  # a forward that fails or returns no logits: one line, now
    return model


def build_fresh(spec: str, in_channels: int | None = None, num_classes: int | None = None,
                input_size: int | None = None, **options) -> nn.Module:
    """:func:`~neurotomy.models.build_model`, with a builder's own refusal of the shape (torchvision's
    ViT asserts that the input size is a multiple of its patch) as one line naming the model, the size
    and the builder's message."""
    try:
        return build_model(spec, in_channels, num_classes, input_size, **options)
    except NeurotomyError:
        raise
    except Exception as exc:  # AssertionError, ValueError, RuntimeError, … from the architecture's constructor
        size = f" for {input_size}×{input_size} inputs" if input_size else ""
        message = " ".join(str(exc).split())[:200] or "no message"
        raise ModelError(f"{spec} cannot be built{size} ({type(exc).__name__}: {message}); try another "
                         "--input-size (one the architecture accepts)") from None


def _complete_shape(model: nn.Module, spec: str) -> None:
    """A file model's shape: what was given, else what the model tells (its first conv's input
    channels, its last Linear's outputs, an ``input_size`` attribute); what stays unknown is an error."""
    args = model.neurotomy_meta.arch_args
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    told = {"in_channels": convs[0].in_channels if convs else None,
            "num_classes": linears[-1].out_features if linears else None,
            "input_size": getattr(model, "input_size", None)}
    for key, option in (("in_channels", "--in-channels"), ("num_classes", "--num-classes"),
                        ("input_size", "--input-size")):
        if key not in args:
            if not isinstance(told[key], int):
                raise ModelError(f"{spec}: cannot tell the model's {key.replace('_', ' ')}; pass {option} N")
            args[key] = int(told[key])


def _check_shape(model: nn.Module, in_channels, num_classes, spec: str) -> None:
    recorded = model.neurotomy_meta.arch_args
    # --input-size may only resize the data (a model with global pooling takes other sizes): not checked
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if value is not None and key in recorded and int(recorded[key]) != int(value):
            raise ModelError(f"{spec} was built with {key.replace('_', ' ')} {recorded[key]}, not {value}; drop "
                             f"--{key.replace('_', '-')} (a checkpoint knows its shape)")


__all__ = ["SPEC_FORMS", "build_fresh", "check_model_spec", "model_spec_kind", "resolve_model"]
