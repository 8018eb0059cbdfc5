"""Explanations: one call shape for every attribution method, and the metrics that rate them.

``attribute(model, inputs, target=None, method=NAME, **opts)`` returns raw maps, ``N × H × W``
(signed where the method is signed); :func:`normalize` rescales them for display. ``target=None``
explains each image's predicted class; a list must give one class per image.

Example:
    >>> import torch
    >>> from neurotomy.models import build_model
    >>> model = build_model("lenet5", 1, 10, 28)
    >>> maps = attribute(model, torch.randn(3, 1, 28, 28), method="gradcam")
    >>> maps.shape
    torch.Size([3, 28, 28])
    >>> "pathway" in METHODS
    True
"""

from __future__ import annotations

import torch
from torch import nn

# each module registers its methods on import; this order is the order they are listed in
from neurotomy.explain import gradients  # noqa: F401,I001
from neurotomy.explain import cam  # noqa: F401
from neurotomy.explain import pathway  # noqa: F401
from neurotomy.explain import perturbation  # noqa: F401
from neurotomy.explain import rollout  # noqa: F401
from neurotomy.explain import crp  # noqa: F401
from neurotomy.explain.metrics import controls  # noqa: F401
from neurotomy.device import place
from neurotomy.explain.common import ExplainError, Target, check_inputs, normalize, resolve_targets
from neurotomy.explain.methods import METHODS, Method, applicable_methods, register_method
from neurotomy.models.anatomy import eval_mode


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target = None, method: str = "gradient",
              device: str | torch.device | None = None, **opts) -> torch.Tensor:
    """Raw attribution maps ``N × H × W`` of ``method`` for each image's ``target`` class.

    Options depend on the method (see ``neurotomy explain --list``): CAM methods take ``layer``
    (a module name), ``pathway`` takes ``prune_fraction`` (default 0.85), ``integrated`` and
    ``granularity``, SmoothGrad takes ``samples``, ``noise`` and ``seed``, ``crp`` takes ``layer`` and
    ``channel`` (default: each image's most relevant channel). ``device`` moves ``model``
    there first (``None``: where it is); the inputs follow the model's device, and the maps come back
    on the device the inputs came from (CPU images: CPU maps, whatever the model's device).
    """
    spec = METHODS.get(method)
    unknown = sorted(set(opts) - set(spec.options()))
    if unknown:
        accepted = ", ".join(spec.options()) or "none"
        raise ExplainError(f"method {method!r} has no option {unknown[0]!r}; its options: {accepted}")
    inputs = check_inputs(inputs)
    place(model, device)
    origin = inputs.device
    inputs = inputs.to(next((p.device for p in model.parameters()), inputs.device))
    with eval_mode(model):
        targets = resolve_targets(model, inputs, target)
        return spec.compute(model, inputs, targets, **opts).to(origin)


def method_names(family: str | None = None) -> list[str]:
    """Names of the registered methods, optionally of one family."""
    return METHODS.names() if family is None else METHODS.names(family=family)


__all__ = ["METHODS", "ExplainError", "Method", "applicable_methods", "attribute", "method_names", "normalize",
           "register_method"]
