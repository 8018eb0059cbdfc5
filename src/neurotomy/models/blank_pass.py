"""One forward pass on a blank input, to see how a model computes — and its answers, remembered.

Finding residual or plain blocks (:mod:`neurotomy.models.residual`, :mod:`neurotomy.models.plain`)
watches which tensor each module and each torch call reads and returns in one pass
(:func:`blank_pass`); the values do not matter, only identities, so the input is zeros. Callers
ask the same question many times (each block removed, each layer listed), and on a 224-px model a
pass costs a second. The answer depends on the model's modules and the input shape, not on its
weights, so :func:`cached` keeps it per model (weakly: a dropped model takes its answers with it)
under the input shape and the list of (name, module type, parameter shapes) — which surgery changes
when it swaps or resizes a module.

Example:
    >>> from torch import nn
    >>> model, calls = nn.Sequential(nn.Linear(2, 2)), []
    >>> ask = lambda: calls.append(1) or len(calls)
    >>> cached(model, "demo", (2,), ask), cached(model, "demo", (2,), ask)
    (1, 1)
    >>> _ = model.append(nn.ReLU())
    >>> cached(model, "demo", (2,), ask)
    2
    >>> model[0] = nn.Linear(2, 3)  # the same types, another shape
    >>> cached(model, "demo", (2,), ask)
    3
"""

from __future__ import annotations

import weakref
from contextlib import AbstractContextManager, ExitStack
from typing import Callable, TypeVar

import torch
from torch import nn

from neurotomy.device import model_device

T = TypeVar("T")
_ANSWERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def blank_pass(model: nn.Module, input_shape: tuple[int, ...], *watching: AbstractContextManager) -> None:
    """Run ``model`` once on one zero input of ``input_shape`` in eval mode (the caller's mode is
    restored), inside every context of ``watching`` (a :class:`~neurotomy.probe.Probe`, a
    ``TorchFunctionMode``)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    blank = torch.zeros(1, *input_shape, device=model_device(model), dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with ExitStack() as stack:
            for context in watching:
                stack.enter_context(context)
            model(blank)
    finally:
        model.train(was_training)


def cached(model: nn.Module, question: str, input_shape: tuple[int, ...], answer: Callable[[], T]) -> T:
    """``answer()`` for ``question`` about ``model`` at ``input_shape``, computed once per module structure."""
    key = (question, tuple(input_shape))
    structure = tuple((name, type(module), tuple(tuple(p.shape) for p in module.parameters(recurse=False)))
                      for name, module in model.named_modules())
    answers = _ANSWERS.setdefault(model, {})
    found = answers.get(key)
    if found is None or found[0] != structure:
        found = answers[key] = (structure, answer())
    return found[1]


__all__ = ["blank_pass", "cached"]
