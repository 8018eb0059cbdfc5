"""Answers measured by a forward pass, remembered per model until its modules change.

Finding residual or plain blocks runs the model once on a blank input; callers ask the same
question many times (each block removed, each layer listed), and on a 224-px model a pass costs a
second. The answer depends on the model's modules and the input shape, not on its weights, so it
is kept per model (weakly: a dropped model takes its answers with it) under the input shape and
the list of (name, module type, parameter shapes) — which surgery changes when it swaps or
resizes a module.

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
from typing import Callable, TypeVar

from torch import nn

T = TypeVar("T")
_ANSWERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


__all__ = ["cached"]
