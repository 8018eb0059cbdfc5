"""Class-wise unit scores: which filters of every conv layer matter for class c.

Each criterion returns a :class:`UnitScores` with a leading *class* axis — ``scores[layer]`` has
shape (classes, filters) — so any action that takes 1-D scores can act for one class through
``scores.for_class(c)`` (splitting a network into per-class modules, :mod:`neurotomy.surgery.class_modules`).

* ``class_activation`` — CNNSplitter (Qi et al., ASE 2022, §3.2): a kernel's relevance to class c is
  its mean activation (post-BN, ReLU, mean over positions) on the training images of c that the
  model classifies *confidently* (correct, softmax ≥ ``confidence`` = 0.9).
* ``class_taylor`` — first-order Taylor relevance (Molchanov et al., ICLR 2017, eq. 8) taken with
  respect to the class's own logit instead of the loss: |mean over positions of A·∂y_c/∂A| averaged
  over the images of class c. The loss gradient vanishes on well-classified images; the logit's
  does not, so this says how much the class's evidence moves with the channel.

Both see each image once: per-image, per-channel statistics are computed in the hook and added to
their class's running sum after the batch (once the logits say which images count).

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> model = load_model("zoo:lenet5-digits")
    >>> scores = ClassActivation()(model, load_dataset("digits"), max_images=64, quiet=True)
    >>> scores.axis, tuple(scores["features.0"].shape)
    ('class', (10, 6))
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.models.anatomy import num_classes_of
from neurotomy.scores.base import CRITERIA, DataCriterion, criterion_of_axis
from neurotomy.scores.unit_scores import UnitScores


class ClassWiseCriterion(DataCriterion):
    """Base of class-wise criteria: per-image statistics, summed per class.

    Subclasses implement :meth:`per_image` (N × channels for one layer's batch) and may override
    :meth:`image_weights` to say which images count (CNNSplitter: the confidently classified ones).
    The streaming, hooks and the sum over processes are :class:`DataCriterion`'s; gradients are of
    each image's own class logit.
    """

    default_images = 2000
    uses_labels = True  # every image's statistics are summed under its label

    def __call__(self, model: nn.Module, data: Dataset | None = None, **kw) -> UnitScores:
        scores = super().__call__(model, data, **kw)
        counts = next(iter(self.state.values()))["count"]
        summary = {"images_per_class": counts.long().tolist()}
        return UnitScores(dict(scores), scores.criterion, "class", {**scores.info, **summary})

    def compute(self, model, units, data, **kw) -> dict[str, torch.Tensor]:
        self.classes = num_classes_of(model, data)
        self.pending: dict[str, torch.Tensor] = {}
        return super().compute(model, units, data, **kw)

    def update(self, layer: str, response: torch.Tensor, grad: torch.Tensor | None) -> None:
        # which images count is known only from the logits, after the batch: see end_batch
        self.pending[layer] = self.per_image(response, grad)

    def objective(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # eval mode: each image's logit depends on that image only, so one backward of the sum
        # gives every image its own ∂y_target/∂A
        return logits.gather(1, targets[:, None]).sum()

    def end_batch(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        weights = self.image_weights(logits, targets).double()
        for layer, stats in self.pending.items():
            per_class = torch.zeros(self.classes, stats.shape[1], dtype=torch.float64)
            self.accumulate(layer, "sum", per_class.index_add_(0, targets, stats.double() * weights[:, None]))
            count = torch.zeros(self.classes, dtype=torch.float64).index_add_(0, targets, weights)
            self.accumulate(layer, "count", count)
        self.pending.clear()

    def result(self, layer: str) -> torch.Tensor:
        state = self.state[layer]
        return state["sum"] / state["count"].clamp(min=1)[:, None]

    def per_image(self, response: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def image_weights(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(targets))


@CRITERIA.register(axis="class")
class ClassActivation(ClassWiseCriterion):
    name = "class_activation"
    paper = "Qi et al., ASE 2022 (CNNSplitter): mean activation on confidently classified images of each class"

    def __init__(self, confidence: float = 0.9) -> None:
        self.confidence = confidence

    def per_image(self, response, grad):
        return response.relu().mean((2, 3))

    def image_weights(self, logits, targets):
        probs = logits.softmax(1)
        return ((logits.argmax(1) == targets) & (probs.gather(1, targets[:, None])[:, 0] >= self.confidence)).double()


@CRITERIA.register(axis="class")
class ClassTaylor(ClassWiseCriterion):
    name = "class_taylor"
    paper = "Molchanov et al., ICLR 2017 Taylor relevance, w.r.t. each class's logit on its images"
    needs_grad = True

    def per_image(self, response, grad):
        return (response * grad).mean((2, 3)).abs()


def get_classwise_criterion(name: str) -> ClassWiseCriterion:
    """A class-wise criterion instance by name: one of ``CRITERIA.names(axis="class")``
    (``class_activation``, ``class_taylor``); a per-unit name is refused with a message naming
    :func:`neurotomy.scores.get_criterion`."""
    return criterion_of_axis(name, "class")()
