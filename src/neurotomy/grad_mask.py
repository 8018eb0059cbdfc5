"""Gradient mask ("lateral inhibition") in back-propagation — a documented hypothesis.

Jiang, Liu, Xiao & Chua (arXiv 2208.06918, 2022) filter "noise gradients" out of back-propagation
with a mask inspired by lateral inhibition, and report higher accuracy, accuracy after pruning and
adversarial accuracy, and saliency maps focused on the object. No code is public and only the
abstract could be read here (the full text was not reachable), so the exact mask is *our*
hypothesis, configurable and measured by ``benchmarks/grad_mask.py`` (docs/methods.md §E5):

- **where**: the gradient w.r.t. the output of every ReLU (``sites="relu"``, default), every
  conv (``sites="conv"``), every max/avg-pool (``sites="pool"``), or named layers; only spatial
  maps (N, C, H, W) are masked. Where a ReLU feeds a max-pool (LeNet-5), its output gradient is
  already zero off each window's maximum, so the mask can only act on the pooled positions;
- **rule** ``"mean"`` (default): per sample and channel keep g where |g| ≥ τ · mean over the map's
  positions of |g| (τ = 1), zero the rest — strong responses inhibit their weak neighbours;
  ``"topq"``: keep the top ``q`` fraction of each map by |g| (ties at the cut are kept);
  ``"act-grad"``: as ``"mean"`` but scoring positions by |a·g|, a the layer's output;
- **when**: only while the masked module is in training mode, so evaluation, saliency maps and
  attacks on a trained model see its plain gradients.

Hooks go through :class:`neurotomy.probe.Probe`, so none remain after the ``with`` block.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).train()
    >>> with GradientMask(model, GradMaskConfig(rule="mean", tau=1.0)) as mask:
    ...     model(torch.randn(4, 1, 4, 4)).sum().backward()
    >>> 0.0 < mask.kept_fraction()["1"] < 1.0, len(model[1]._forward_hooks)
    (True, 0)
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ContextManager, Iterable

import torch
from torch import nn

from neurotomy.errors import ModelError, OptionError
from neurotomy.probe import Probe

RULES = ("mean", "topq", "act-grad")
SITE_KINDS = {"relu": (nn.ReLU, nn.ReLU6), "conv": (nn.Conv2d,), "pool": (nn.MaxPool2d, nn.AvgPool2d)}


@dataclass(frozen=True)
class GradMaskConfig:
    """Which gradients to keep: ``rule`` (see module doc), its ``tau`` or ``q``, and the ``sites``
    ("relu", "conv", "pool" or a tuple of layer names)."""

    rule: str = "mean"
    tau: float = 1.0
    q: float = 0.5
    sites: str | tuple[str, ...] = "relu"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise OptionError(f"unknown gradient-mask rule {self.rule!r}; use one of {', '.join(RULES)}")
        if not (self.tau >= 0 and math.isfinite(self.tau)):
            raise OptionError(f"gradient-mask tau must be a finite number ≥ 0, got {self.tau}")
        if not 0 < self.q <= 1:
            raise OptionError(f"gradient-mask q must be in (0, 1] (the fraction of each map kept), got {self.q}")
        if isinstance(self.sites, str) and self.sites not in SITE_KINDS:
            raise OptionError(f"unknown gradient-mask sites {self.sites!r}; use relu, conv, pool or layer names")


def keep_mask(grad: torch.Tensor, activation: torch.Tensor, config: GradMaskConfig) -> torch.Tensor:
    """Boolean mask, shaped like ``grad`` (N, C, H, W), of the gradient entries ``config`` keeps.

    Example:
        >>> g = torch.tensor([[[[1.0, -3.0], [0.5, 2.0]]]])        # mean |g| = 1.625
        >>> keep_mask(g, torch.ones_like(g), GradMaskConfig()).int().flatten().tolist()
        [0, 1, 0, 1]
    """
    score = (activation * grad).abs() if config.rule == "act-grad" else grad.abs()
    flat = score.flatten(2)  # (N, C, positions): each sample's channel map is judged on its own
    if config.rule == "topq":
        k = max(1, math.ceil(config.q * flat.shape[2]))
        threshold = flat.topk(k, dim=2).values[..., -1:]  # the k-th largest; ties with it are kept
    else:
        threshold = config.tau * flat.mean(2, keepdim=True)
    return (flat >= threshold).view_as(grad)


def mask_sites(model: nn.Module, sites: str | Iterable[str] = "relu") -> list[str]:
    """Names of the layers whose output gradients get masked: every ReLU, conv or pool, or a list."""
    if not isinstance(sites, str):
        return list(sites)
    names = [name for name, m in model.named_modules() if name and isinstance(m, SITE_KINDS[sites])]
    if not names:
        raise ModelError(f"the model has no {sites} layers to mask; pass sites='relu', 'conv', 'pool' or layer names")
    return names


class GradientMask:
    """Context manager: while inside, gradients at ``config.sites`` are masked by ``config.rule``.

    ``only_in_training`` (default) leaves modules in eval mode alone. With ``track`` (default), per
    site, ``kept_fraction()`` reports the share of *non-zero* gradient entries kept so far (entries a
    ReLU or max-pool already zeroed are not counted: dropping them changes nothing) and
    ``kept_mass()`` the share of Σ|g| kept; training skips this (it costs ~15 % of a ResNet-20 step).
    """

    def __init__(self, model: nn.Module, config: GradMaskConfig, only_in_training: bool = True,
                 track: bool = True) -> None:
        self.config = config
        self.only_in_training = only_in_training
        self.track = track
        self.probe = Probe(model, mask_sites(model, config.sites), on_grad=self._filter)
        self._kept: dict[str, list[float]] = {}  # site -> [kept non-zero, non-zero, kept Σ|g|, Σ|g|]

    def _filter(self, name: str, output: torch.Tensor, grad: torch.Tensor) -> torch.Tensor | None:
        if grad.ndim != 4 or (self.only_in_training and not self.probe.modules[name].training):
            return None  # not a spatial map, or not training: the gradient passes unchanged
        keep = keep_mask(grad, output, self.config)
        masked = torch.where(keep, grad, torch.zeros((), dtype=grad.dtype))
        if not self.track:
            return masked
        nonzero, magnitude = grad != 0, grad.abs()
        counts = self._kept.setdefault(name, [0.0, 0.0, 0.0, 0.0])
        for i, value in enumerate(((keep & nonzero).sum(), nonzero.sum(), masked.abs().sum(), magnitude.sum())):
            counts[i] += float(value)
        return masked

    def kept_fraction(self) -> dict[str, float]:
        return {name: c[0] / c[1] if c[1] else 1.0 for name, c in self._kept.items()}

    def kept_mass(self) -> dict[str, float]:
        return {name: c[2] / c[3] if c[3] else 1.0 for name, c in self._kept.items()}

    def __enter__(self) -> "GradientMask":
        self.probe.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.probe.remove()


def training_mask(model: nn.Module, config) -> ContextManager:
    """The mask a :class:`~neurotomy.train.TrainConfig` asks for (``grad_mask*`` fields), or a
    no-op context — with the mask off no hook is registered, so training is unchanged bit for bit."""
    if not getattr(config, "grad_mask", False):
        return nullcontext()
    return GradientMask(model, GradMaskConfig(rule=config.grad_mask_rule, tau=config.grad_mask_tau,
                                              q=config.grad_mask_q, sites=config.grad_mask_sites), track=False)
