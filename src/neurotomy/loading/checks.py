"""Checks a loaded model must pass before any work: it runs on its own input shape and returns one
row of class logits per image (:func:`check_classifier_output`), and a second model (a teacher, a
model to compare with) takes the first one's inputs and gives as many classes (:func:`check_compatible`).

Both fail with one :class:`~neurotomy.errors.ModelError` line naming the model and the fix, so a
model whose forward returns a dict, a tuple or an N×C×1×1 map fails at the door, not deep inside a
training loop, an explanation or an ONNX export.

Example:
    >>> from neurotomy.models import build_model
    >>> check_classifier_output(build_model("lenet5", 1, 10, 8), "lenet5")
    10
    >>> check_compatible(build_model("lenet5", 1, 10, 8), build_model("lenet5", 3, 10, 8), "lenet5",
    ...                  "--teacher t")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neurotomy.errors.ModelError: --teacher t takes 3×8×8 inputs but lenet5 takes 1×8×8; give a second model ...
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from neurotomy.device import model_device
from neurotomy.errors import ModelError, NeurotomyError
from neurotomy.models.anatomy import eval_mode

PROBE_BATCH = 2  # two images, not one: a forward that squeezes its batch axis shows it


def _shape_text(shape) -> str:
    return "×".join(str(int(n)) for n in shape) or "scalar"


def probe_output(model: nn.Module, name: str):
    """What ``model`` returns for :data:`PROBE_BATCH` blank images of its recorded input shape; a
    forward that raises (an input size the architecture refuses) is one line with the model's message."""
    shape = model.neurotomy_meta.input_shape
    _check_one_input(model, name)
    try:
        with torch.no_grad(), eval_mode(model):
            return model(torch.zeros(PROBE_BATCH, *shape, device=model_device(model)))
    except NeurotomyError:
        raise
    except Exception as exc:  # the model's own check (AssertionError, ValueError, RuntimeError, …)
        message = " ".join(str(exc).split())[:200] or "no message"
        raise ModelError(f"{name} cannot run on {_shape_text(shape)} inputs ({type(exc).__name__}: {message}); "
                         "try another --input-size (one the architecture accepts)") from None


def _check_one_input(model: nn.Module, name: str) -> None:
    """neurotomy calls ``model(images)``: a forward that needs another input, or takes the images only by
    keyword, is one line saying so (no input size would help it)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # a forward Python cannot inspect (a C extension): the probe will tell
        return
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    required = [p.name for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not positional or len(required) > 1:
        takes = ", ".join(p.name if p.kind is not p.KEYWORD_ONLY else f"*, {p.name}" for p in parameters)
        raise ModelError(f"{name}: forward({takes}) does not take one images tensor as its only input; wrap the "
                         "model in an nn.Module whose forward(images) supplies the other inputs")


def describe_output(output) -> str:
    """What a forward returned, in a few words: ``dict with keys logits, aux``, ``tensor of shape 2×4×1×1``."""
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {_shape_text(output.shape)}"
    if isinstance(output, dict):
        return f"a {type(output).__name__} with keys {', '.join(map(str, output)) or '(none)'}"
    if isinstance(output, (tuple, list)):
        parts = ", ".join(describe_output(item).removeprefix("a ") for item in output[:4])
        return f"a {type(output).__name__} of {len(output)} ({parts}{', …' if len(output) > 4 else ''})"
    return f"a {type(output).__name__}"


def check_classifier_output(model: nn.Module, name: str) -> int:
    """The number of classes ``model`` gives, after checking that its forward returns an
    N × classes tensor of logits; anything else (a dict, a tuple, an N×C×1×1 map) is one line that
    says what it returned and how to wrap it. Nothing is unwrapped silently: which entry holds the
    logits is the model author's to say."""
    output = probe_output(model, name)
    if isinstance(output, torch.Tensor) and output.dim() == 2 and output.shape[0] == PROBE_BATCH:
        return int(output.shape[1])
    fix = "wrap it so forward returns the N × classes logits tensor"
    if isinstance(output, torch.Tensor) and output.dim() > 2 and all(n == 1 for n in output.shape[2:]):
        fix = "add nn.Flatten() after its last layer (or return logits.flatten(1)) so forward returns N × classes"
    raise ModelError(f"{name}: forward returned {describe_output(output)} for {PROBE_BATCH} images, not an "
                     f"N × classes tensor of logits; {fix}")


def check_compatible(model: nn.Module, other: nn.Module, name: str, other_name: str) -> None:
    """``other`` (a teacher, a model to compare with) must take ``model``'s input shape (channels ×
    H × W as each records it) and give as many classes; else one line naming both."""
    shape, other_shape = model.neurotomy_meta.input_shape, other.neurotomy_meta.input_shape
    fix = "give a second model made for the same inputs and classes"
    if tuple(shape) != tuple(other_shape):
        raise ModelError(f"{other_name} takes {_shape_text(other_shape)} inputs but {name} takes "
                         f"{_shape_text(shape)}; {fix}")
    classes, other_classes = check_classifier_output(model, name), check_classifier_output(other, other_name)
    if classes != other_classes:
        raise ModelError(f"{other_name} gives {other_classes} classes but {name} gives {classes}; {fix}")


__all__ = ["PROBE_BATCH", "check_classifier_output", "check_compatible", "describe_output", "probe_output"]
