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

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from neurotomy.explain import cam, gradients, pathway
from neurotomy.explain.common import (ExplainError, Target, check_inputs, eval_mode, normalize, pixel_map,
                                      resolve_targets)
from neurotomy.explain.metrics.controls import random_map, sobel_map


@dataclass(frozen=True)
class Method:
    """An attribution method: how to call it and what it is based on."""

    name: str
    compute: Callable[..., torch.Tensor]  # (model, inputs, targets, **opts) -> N × H × W
    family: str  # gradient | cam | pathway | control
    signed: bool
    paper: str

    def options(self) -> list[str]:
        return [p.name for p in inspect.signature(self.compute).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _per_pixel(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap an input attribution (N × C × H × W) so it returns one signed map per image."""
    def compute(model, inputs, targets, **opts):
        return pixel_map(fn(model, inputs, targets, **opts).detach())
    compute.__signature__ = inspect.signature(fn)  # keep the option names visible
    return compute


def _cam(cls: type[cam.CAM]) -> Callable[..., torch.Tensor]:
    def compute(model, inputs, targets, *, layer: str | None = None, relu: bool = True, batch_size: int = 128):
        return cls(layer=layer, relu=relu, batch_size=batch_size)(model, inputs, targets).detach()
    return compute


def _random(model, inputs, targets, *, seed: int = 0):
    return random_map(inputs, seed=seed)


def _sobel(model, inputs, targets):
    return sobel_map(inputs)


_CAM_PAPERS = {
    "gradcam": "Selvaraju et al., ICCV 2017", "gradcam_pp": "Chattopadhay et al., WACV 2018",
    "hirescam": "Draelos & Carin, 2020", "layercam": "Jiang et al., IEEE TIP 2021",
    "scorecam": "Wang et al., CVPR-W 2020", "ablationcam": "Desai & Ramaswamy, WACV 2020",
    "eigencam": "Muhammad & Yeasin, IJCNN 2020",
}

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("gradient", _per_pixel(gradients.gradient), "gradient", True, "Simonyan et al., 2014 (Captum Saliency)"),
    Method("input_x_gradient", _per_pixel(gradients.input_x_gradient), "gradient", True,
           "Shrikumar et al., 2016 (Captum InputXGradient)"),
    Method("integrated_gradients", _per_pixel(gradients.integrated_gradients), "gradient", True,
           "Sundararajan et al., ICML 2017 (Captum, 50 steps, zero baseline)"),
    Method("smoothgrad", _per_pixel(gradients.smoothgrad), "gradient", True,
           "Smilkov et al., 2017 (Captum NoiseTunnel, σ = 0.15 range, 50 samples)"),
    Method("smoothgrad_sq", _per_pixel(gradients.smoothgrad_sq), "gradient", False,
           "Hooker et al., NeurIPS 2019 (SmoothGrad²)"),
    *[Method(name, _cam(cls), "cam", False, _CAM_PAPERS[name]) for name, cls in cam.CAM_METHODS.items()],
    Method("pathway", _per_pixel(pathway.pathway_gradient), "pathway", True,
           "Khakzar et al., CVPR 2021 (critical-pathway gradient)"),
    Method("random", _random, "control", False, "uniform noise (ROAR's random baseline)"),
    Method("sobel", _sobel, "control", False, "Sobel edge magnitude (Adebayo et al.'s model-free control)"),
]}


def attribute(model: nn.Module, inputs: torch.Tensor, target: Target = None, method: str = "gradient",
              **opts) -> torch.Tensor:
    """Raw attribution maps ``N × H × W`` of ``method`` for each image's ``target`` class.

    Options depend on the method (see ``neurotomy explain --list``): CAM methods take ``layer``
    (a module name), ``pathway`` takes ``prune_fraction`` (default 0.85), ``integrated`` and
    ``granularity``, SmoothGrad takes ``samples``, ``noise`` and ``seed``.
    """
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    spec = METHODS[method]
    unknown = sorted(set(opts) - set(spec.options()))
    if unknown:
        accepted = ", ".join(spec.options()) or "none"
        raise ExplainError(f"method {method!r} has no option {unknown[0]!r}; its options: {accepted}")
    inputs = check_inputs(inputs)
    device = next((p.device for p in model.parameters()), inputs.device)
    inputs = inputs.to(device)
    with eval_mode(model):
        targets = resolve_targets(model, inputs, target)
        return spec.compute(model, inputs, targets, **opts)


def method_names(family: str | None = None) -> list[str]:
    """Names of the registered methods, optionally of one family."""
    return [n for n, m in METHODS.items() if family is None or m.family == family]


__all__ = ["METHODS", "ExplainError", "Method", "attribute", "method_names", "normalize"]
