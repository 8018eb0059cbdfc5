"""The registry of attribution methods: what :func:`neurotomy.explain.attribute` can call.

Each method registers itself where it is defined, with :func:`register_method` on its function
(gradients, pathway, the model-blind controls) or :func:`neurotomy.explain.cam.register_cam` on its
CAM class — so adding a CAM method is one class in ``cam.py``. Registration order is listing order
(``neurotomy explain --list``, the benchmarks): :mod:`neurotomy.explain` imports the defining
modules in that order.

Example:
    >>> import neurotomy.explain
    >>> METHODS["gradcam"].family, METHODS["gradcam"].paper
    ('cam', 'Selvaraju et al., ICCV 2017')
    >>> METHODS.names(family="control")
    ['random', 'sobel']
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from neurotomy.explain.common import ExplainError, pixel_map
from neurotomy.models.transformer import is_transformer
from neurotomy.registry import Registry


@dataclass(frozen=True)
class Method:
    """An attribution method: how to call it and what it is based on."""

    name: str
    compute: Callable[..., torch.Tensor]  # (model, inputs, targets, **opts) -> N × H × W
    family: str  # gradient | cam | pathway | attention | concept | control
    signed: bool
    paper: str
    unfit: Callable[[torch.nn.Module], str | None] | None = None  # model -> why it cannot be explained, or None

    def cannot_explain(self, model: torch.nn.Module) -> str | None:
        """Why this method cannot explain ``model`` (one clause), or ``None`` when it can."""
        if self.family == "attention" and not is_transformer(model):
            return "the model has no attention layers"
        return self.unfit(model) if self.unfit is not None else None

    def options(self) -> list[str]:
        return [p.name for p in inspect.signature(self.compute).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]


METHODS: Registry[Method] = Registry("method", error=ExplainError)
"""Every attribution method by name, tagged by ``family``."""


def per_pixel(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap an input attribution (N × C × H × W) so it returns one signed map per image."""
    def compute(model, inputs, targets, **opts):
        return pixel_map(fn(model, inputs, targets, **opts).detach())
    compute.__signature__ = inspect.signature(fn)  # keep the option names visible
    return compute


def register_method(name: str, *, family: str, signed: bool, paper: str, input_attribution: bool = False,
                    unfit: Callable[[torch.nn.Module], str | None] | None = None):
    """Decorator: register ``fn(model, inputs, targets, *, options…)`` as the method ``name``.

    ``fn`` returns maps ``N × H × W``, or with ``input_attribution=True`` an ``N × C × H × W`` input
    attribution that :func:`per_pixel` reduces to one signed map per image. Keyword-only parameters
    are the method's options. ``unfit(model)`` says why the method cannot explain a model (``None``:
    it can), so :func:`applicable_methods` leaves it out. ``fn`` itself is returned unchanged.
    """
    def decorate(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        compute = per_pixel(fn) if input_attribution else fn
        METHODS.add(name, Method(name, compute, family, signed, paper, unfit), family=family)
        return fn
    return decorate


def applicable_methods(model: torch.nn.Module) -> list[str]:
    """The registered methods that can explain ``model``, in listing order: the attention family
    (rollout) only for models with attention layers, pathway only for models with activations
    (modules or ``F.relu`` calls; see :meth:`Method.cannot_explain`).

    Example:
        >>> import neurotomy.explain
        >>> from neurotomy.models import build_model
        >>> "rollout" in applicable_methods(build_model("lenet5")), "rollout" in applicable_methods(build_model("vit_tiny"))
        (False, True)
    """
    return [name for name, method in METHODS.items() if method.cannot_explain(model) is None]
