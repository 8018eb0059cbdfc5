"""The ``Criterion`` base classes: plumbing once, each paper a short subclass.

A criterion scores the output channels of every ``Conv2d`` of a model (its *units*). Data-free
criteria override :meth:`WeightCriterion.score_layer`; data-driven ones say what they need
(``needs_grad``) and reduce each batch in :meth:`DataCriterion.update`, the base class streaming the
data through :class:`~neurotomy.probe.Probe` so memory is bounded by one batch.

Every criterion class registers itself in :data:`CRITERIA` where it is defined, tagged by its
*axis*: ``axis="unit"`` for one score per filter (what pruning ranks), ``axis="class"`` for one
score per class and filter (:mod:`neurotomy.scores.classwise`, what splitting takes). Adding a
criterion is one file with ``@CRITERIA.register(axis="unit")`` on its class, plus one import line
in :mod:`neurotomy.scores`.

Where activations are observed: a conv's channel is seen *after its BatchNorm* (when one follows
it directly) and, for activation statistics, after a ReLU applied to that — the channel's own
response, before any residual addition. Gradient criteria differentiate the loss w.r.t. the same
post-BN tensor.

Example:
    >>> from neurotomy.models import build_model
    >>> from neurotomy.scores import get_criterion
    >>> scores = get_criterion("l1")(build_model("resnet20", 1, 10, 28))
    >>> scores["conv1"].shape
    torch.Size([16])
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.data.labels import check_labels
from neurotomy.device import model_device, to_device
from neurotomy.distributed import probe_shard, reduce_state
from neurotomy.errors import NeurotomyError
from neurotomy.models.anatomy import eval_mode, execution_order, model_input_shape
from neurotomy.models.data_fit import check_images_fit, check_known_labels
from neurotomy.probe import Probe, leaf_modules
from neurotomy.progress import add_task, progress_bar
from neurotomy.registry import Registry
from neurotomy.scores.unit_scores import UnitScores

CRITERIA: Registry[type[Criterion]] = Registry("criterion", hint="(see `neurotomy criteria`)")
"""Every criterion class by name, tagged ``axis="unit"`` or ``axis="class"``."""


class Axis(NamedTuple):
    """What a criterion axis is called in errors, what it scores, and the function that returns one."""

    kind: str
    adjective: str
    scores: str
    getter: str


AXES = {"unit": Axis("criterion", "per-unit", "one score per filter", "get_criterion"),
        "class": Axis("class-wise criterion", "class-wise", "one score per class and filter",
                      "get_classwise_criterion")}


@dataclass(frozen=True)
class ConvUnit:
    """A conv layer whose output channels are units, with the BatchNorm that follows it (if any)."""

    conv_name: str
    conv: nn.Conv2d
    bn_name: str | None
    bn: nn.BatchNorm2d | None

    @property
    def site(self) -> str:
        """The module whose output is this conv's per-channel response."""
        return self.bn_name or self.conv_name


def conv_units(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[ConvUnit]:
    """Every Conv2d in execution order, paired with the BatchNorm that consumes it directly.

    Pairing by execution order (conv then a BN of matching width) needs one forward pass of a
    dummy image; without an input shape, pairing falls back to definition order.
    """
    modules = dict(model.named_modules())
    order = (execution_order(model, torch.zeros(1, *input_shape, device=model_device(model)), leaf_modules(model)) if input_shape
             else leaf_modules(model))
    units = []
    for i, name in enumerate(order):
        conv = modules[name]
        if not isinstance(conv, nn.Conv2d):
            continue
        nxt = modules[order[i + 1]] if i + 1 < len(order) else None
        bn_ok = isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == conv.out_channels
        units.append(ConvUnit(name, conv, order[i + 1] if bn_ok else None, nxt if bn_ok else None))
    return units


class Criterion:
    """Base of every criterion. Subclasses set ``name`` and ``paper`` and implement scoring."""

    name: str = ""
    paper: str = ""
    needs_data: bool = False

    def __call__(self, model: nn.Module, data: Dataset | None = None, *, batch_size: int = 128,
                 max_images: int | None = None, seed: int = 0, quiet: bool = False) -> UnitScores:
        if self.needs_data and data is not None:
            check_images_fit(model, data)  # one image, before the model meets the data (here or in compute)
        units = conv_units(model, model_input_shape(model, data))
        if not units:
            raise NeurotomyError("the model has no Conv2d layer to score; neurotomy scores conv filters")
        start = time.perf_counter()
        with eval_mode(model):
            scores = self.compute(model, units, data, batch_size=batch_size, max_images=max_images,
                                  seed=seed, quiet=quiet)
        info = {"paper": self.paper, "seconds": time.perf_counter() - start}
        return UnitScores(scores, criterion=self.name, info=info)

    def compute(self, model, units, data, **kw) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class WeightCriterion(Criterion):
    """Data-free: each conv's scores come from its weights (and its BatchNorm)."""

    def compute(self, model, units, data, **kw) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {u.conv_name: self.score_layer(u).detach().double() for u in units}

    def score_layer(self, unit: ConvUnit) -> torch.Tensor:
        raise NotImplementedError


class DataCriterion(Criterion):
    """Data-driven: streams images through the model and reduces per batch.

    Subclasses implement :meth:`update` (one batch of one layer) and :meth:`result`.
    ``default_images`` is the calibration set size the paper used.
    """

    needs_data = True
    needs_grad = False
    default_images = 640

    def compute(self, model, units, data, *, batch_size, max_images, seed, quiet) -> dict[str, torch.Tensor]:
        if data is None:
            raise NeurotomyError(f"criterion {self.name!r} needs data; pass --data NAME")
        labels_checked = not self.uses_labels or check_known_labels(model, data)  # else each batch's, below
        max_images = max_images or self.default_images
        sites = {u.site: u for u in units}
        self.state: dict[str, dict] = {u.conv_name: {} for u in units}

        def on_output(site: str, out: torch.Tensor) -> None:
            if not self.needs_grad:
                self.update(sites[site].conv_name, out.detach(), None)

        def on_grad(site: str, out: torch.Tensor, grad: torch.Tensor) -> None:
            self.update(sites[site].conv_name, out, grad.detach())

        generator = torch.Generator().manual_seed(seed)
        # Under `accelerate launch` each process takes every N-th batch of the same order and the
        # sums are all-reduced below, so N processes score exactly what one process scores.
        shard = probe_shard()
        batches = range(num_batches(data, batch_size, max_images))
        where = model_device(model)  # batches follow the model's device; results come back on the CPU
        with progress_bar(quiet) as bar, Probe(model, sites, on_output=on_output,
                                               on_grad=on_grad if self.needs_grad else None):
            task = add_task(bar, f"score {self.name}", len(batches if shard is None else batches[shard[0]::shard[1]]))
            for images, targets in iterate_batches(data, batch_size, shuffle=True, generator=generator,
                                                   max_images=max_images, shard=shard):
                labels = targets  # the CPU copy, checked without waiting for the device
                images, targets = to_device(where, images, targets)
                if self.needs_grad:
                    images = gradient_reaching_every_layer(images)
                with torch.set_grad_enabled(self.needs_grad):
                    logits = model(images)
                    if not labels_checked:  # labels not at hand before the pass: each batch's
                        check_labels(labels, logits.shape[1])
                    if self.needs_grad:
                        model.zero_grad(set_to_none=True)
                        self.objective(logits, targets).backward()
                self.end_batch(logits.detach(), targets)
                bar.advance(task)
        if self.needs_grad:
            model.zero_grad(set_to_none=True)
        reduce_state(self.state)
        return {name: self.result(name).detach().cpu().double() for name in self.state}

    @property
    def uses_labels(self) -> bool:
        """Whether the scores read the labels (checked before the pass when they do): the default
        :meth:`objective`, the loss, does; a criterion that reads them otherwise says so."""
        return self.needs_grad and type(self).objective is DataCriterion.objective

    def update(self, layer: str, response: torch.Tensor, grad: torch.Tensor | None) -> None:
        raise NotImplementedError

    def objective(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """What gradient criteria differentiate: the summed loss (Molchanov et al.). A criterion
        that asks about a class's evidence differentiates that class's logit instead."""
        return F.cross_entropy(logits, targets, reduction="sum")

    def end_batch(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Called after every batch with its (detached) logits, once the batch's :meth:`update`
        calls are done — for statistics that depend on the model's decision about each image."""

    def result(self, layer: str) -> torch.Tensor:
        raise NotImplementedError

    def accumulate(self, layer: str, key: str, value: torch.Tensor) -> None:
        """Running sum of ``value`` under ``state[layer][key]``."""
        state = self.state[layer]
        state[key] = state[key] + value if key in state else value.clone()


def gradient_reaching_every_layer(images: torch.Tensor) -> torch.Tensor:
    """``images`` as a leaf that requires grad: every layer's response then has a gradient, also
    behind frozen parameters (``requires_grad=False``), which would otherwise cut the backward pass
    short of them (a frozen backbone, or a fully frozen model that has nothing to differentiate)."""
    if not images.is_floating_point():
        return images
    return images.detach().requires_grad_(True)


def criterion_of_axis(name: str, axis: str) -> type[Criterion]:
    """The criterion class registered as ``name`` with ``axis``.

    A name of the other axis fails with a message naming the function that returns it; any other
    name fails with the registry's one "unknown …; use one of …" error, listing this axis's names.
    """
    wanted = AXES[axis]
    if name in CRITERIA and CRITERIA.tags(name)["axis"] != axis:
        other = AXES[CRITERIA.tags(name)["axis"]]
        raise NeurotomyError(f"{name!r} is a {other.adjective} criterion ({other.scores}), not a {wanted.adjective} "
                             f"one; get it with {other.getter}({name!r}); {wanted.adjective} criteria: "
                             f"{', '.join(CRITERIA.names(axis=axis))}")
    view: Registry[type[Criterion]] = Registry(wanted.kind, error=CRITERIA.error, hint=CRITERIA.hint)
    for registered in CRITERIA.names(axis=axis):
        view.add(registered, CRITERIA[registered], **CRITERIA.tags(registered))
    return view.get(name)
