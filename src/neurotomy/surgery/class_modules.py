"""Split a trained CNN into per-class modules (CNNSplitter, Qi et al., ASE 2022).

A *module* for class c is a physically smaller copy of the model that keeps the conv filters
relevant to c and answers "c or not c" with a two-output head (output 1 = c). Steps, each a call:

1. **Relevance**: a class-wise :class:`UnitScores` (default ``class_activation``, the paper's mean
   activation on confidently classified images of c, §3.2); row c ranks every coupled channel group
   the way pruning does (:mod:`neurotomy.surgery.filters`: sum of the coupled layers' normalised
   scores), so residual-stream channels are kept or dropped together.
2. **Search** how many of each group's least relevant channels to drop, judging a candidate by
   masking those channels (exactly what removal computes) and measuring the balanced c-vs-rest
   accuracy of a linear read-out of its penultimate features (ridge fit on half of a balanced
   calibration set, scored on the other half). The paper scores the pruned model's own output
   without retraining; as our module gets a new c-vs-rest head anyway, we judge what such a head
   can recover (the old head's argmax loses its meaning once other classes' filters go):

   * ``search="threshold"`` (cheap): one kept fraction q for every group, the smallest on a grid
     whose balanced accuracy stays ≥ ``tolerance`` × the full model's;
   * ``search="ga"`` (the paper's §3.3, scaled down): a genetic algorithm over per-group genes.
     The paper keeps or drops each of 10 kernel groups per layer with a bit; we sort each layer's
     channels by relevance into ``ga.groups`` groups and let the gene say how many of the most
     relevant ones stay (a monotone version of the same space, small enough for 2 CPU cores).
     Fitness, as in the paper: 0.9 × balanced c-vs-rest accuracy + 0.1 × non-overlap, where
     non-overlap is 1 − the mean Jaccard overlap with the kept kernels of ``others`` (modules
     already found), or 1 − the kept fraction when there are none yet.

3. **Cut** with torch-pruning (the recipe records it) and replace the classifier by a c-vs-rest
   head initialised from the old one (row 1 = W_c, row 0 = the mean of the other rows)
   (:func:`cut_class_module`). The job :func:`neurotomy.jobs.split.split` then fine-tunes briefly
   on a balanced c-vs-rest set and shifts the head's bias by the log prior odds of c in the data
   (the paper does not retrain; ``finetune_epochs=0`` skips it). The searches live in
   :mod:`neurotomy.surgery.class_search`.

Module metrics (:func:`module_metrics`): one-vs-rest accuracy on the test set as it is, balanced
accuracy, precision and recall of c. Across modules (:func:`module_set_metrics`): **coupling**, the
mean Jaccard overlap of the kept conv filters of two modules; **cohesion**, the mean relevance of a
module's kept filters to its own class, each filter's class-c score rank-normalised in its layer
(0 = least relevant, 1 = most; keeping filters at random gives 0.5).

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> model, data = load_model("zoo:lenet5-digits"), load_dataset("digits")
    >>> module = cut_class_module(model, data, class_index=3, calibration_images=100, quiet=True)
    >>> module.model(data[0][0][None]).shape, 0 < module.kept_fraction <= 1
    (torch.Size([1, 2]), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.device import model_device, to_device
from neurotomy.data.dataset import in_memory
from neurotomy.data.labels import dataset_targets, require_class_images
from neurotomy.data.tensor_dataset import TensorImageDataset
from neurotomy.errors import NeurotomyError
from neurotomy.models.anatomy import classifier_layer, model_input_shape, num_classes_of
from neurotomy.models.summary import layer_table
from neurotomy.scores import CRITERIA
from neurotomy.scores.classwise import ClassActivation
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.class_search import CLASS_SEARCHES, GAConfig, ModuleCandidates, jaccard
from neurotomy.surgery.filters import apply_cuts
from neurotomy.surgery.heads import replace_with_binary_head


@dataclass
class ClassModule:
    """A module: the c-vs-rest sub-network and what the split measured."""

    model: nn.Module
    class_index: int
    kept: dict[str, list[int]]  # conv layer → kept filter indices (of the original model)
    kept_fraction: float  # conv filters kept / conv filters of the original model
    macs: int
    macs_original: int
    search: str
    details: dict = field(default_factory=dict)  # what the search measured (masked accuracy, trace…), cohesion

    def summary(self) -> dict:
        return {"class": self.class_index, "kept_fraction": self.kept_fraction, "macs": self.macs,
                "macs_original": self.macs_original, "search": self.search, **self.details}


# ---------------------------------------------------------------- data

def as_tensors(data: Dataset) -> TensorImageDataset:
    """``data`` in memory (:func:`neurotomy.data.in_memory`): the one-vs-rest sets re-slice every image."""
    return in_memory(data)


def one_vs_rest(data: Dataset, class_index: int, max_images: int | None = None,
                seed: int = 0) -> TensorImageDataset:
    """A balanced c-vs-rest dataset: images of c labelled 1 and as many others labelled 0, both
    drawn at random (``max_images`` in all, at most).

    Example:
        >>> from neurotomy.data import load_dataset
        >>> ds = one_vs_rest(load_dataset("digits"), 3, max_images=40)
        >>> len(ds), int(ds.targets.sum()), ds.classes
        (40, 20, ['not 3', '3'])
    """
    data = as_tensors(data)
    generator = torch.Generator().manual_seed(seed)
    require_class_images(data.targets, class_index)
    is_c = data.targets == class_index
    positives = torch.nonzero(is_c)[:, 0]
    negatives = torch.nonzero(~is_c)[:, 0]
    per_side = min(len(positives), len(negatives))
    if max_images is not None:
        per_side = min(per_side, max(1, max_images // 2))
    pick = torch.cat([positives[torch.randperm(len(positives), generator=generator)[:per_side]],
                      negatives[torch.randperm(len(negatives), generator=generator)[:per_side]]])
    name = data.classes[class_index] if class_index < len(data.classes) else str(class_index)
    return TensorImageDataset(data.images[pick], is_c[pick].long(), [f"not {name}", name],
                              data.normalization, data.name, flip_safe=data.flip_safe)


# ---------------------------------------------------------------- the cut

def cut_class_module(model: nn.Module, data: Dataset, class_index: int, *, scores: UnitScores | None = None,
                     search: str = "threshold", tolerance: float = 0.99, calibration_images: int = 500,
                     ga: GAConfig | None = None, others: list[dict[str, list[int]]] | None = None,
                     seed: int = 0, quiet: bool = False) -> ClassModule:
    """The module of class ``class_index``, cut but not fine-tuned (the issue's ``class=c``;
    ``class`` is a Python keyword).

    ``data`` is training data: it gives the relevance scores (when ``scores`` is None) and the
    balanced calibration set the search judges candidates on.
    """
    classes = num_classes_of(model, data)
    if not 0 <= class_index < classes:
        raise NeurotomyError(f"class index {class_index} is out of range; the model has classes 0…{classes - 1}")
    require_class_images(dataset_targets(data), class_index)  # before the scores and the search
    run_search = CLASS_SEARCHES.get(search)
    input_shape = model_input_shape(model, data)
    if input_shape is None:
        raise NeurotomyError("the model carries no input shape; load it with neurotomy.load_model")
    model = model.eval()
    if scores is None:
        scores = ClassActivation()(model, data, seed=seed, quiet=quiet)
    counted = scores.info.get("images_per_class")
    if counted is not None and counted[class_index] == 0:
        others = [n for n in CRITERIA.names(axis="class") if n != scores.criterion]
        raise NeurotomyError(f"no image of class {class_index} counted for the relevance scores (none classified "
                             f"confidently?); give more data, or scores from another class-wise criterion "
                             f"(--criterion {' / '.join(others)})")
    calibration = one_vs_rest(data, class_index, calibration_images, seed=seed)
    cand = ModuleCandidates(model, scores.for_class(class_index), class_index, calibration, input_shape)
    counts, details = run_search(cand, tolerance=tolerance, ga=ga, others=others or [], seed=seed, quiet=quiet)
    kept = cand.kept_filters(counts)
    kept_fraction = cand.kept_fraction(counts)
    pruned = apply_cuts(model, cand.cuts(counts), input_shape)
    head_name, _ = classifier_layer(pruned)
    replace_with_binary_head(pruned, head_name, class_index)
    meta = getattr(pruned, "neurotomy_meta", None)
    if meta is not None:
        meta.recipe = list(meta.recipe) + [{"op": "binary_head", "layer": head_name, "class_index": class_index}]
        name = meta.classes[class_index] if meta.classes else str(class_index)
        meta.classes = [f"not {name}", name]
    pruned.eval()
    details.update({"finetune_epochs": 0, "criterion": scores.criterion,
                    "cohesion": cohesion(kept, scores.for_class(class_index))})
    module = ClassModule(pruned, class_index, kept, kept_fraction, layer_table(pruned, input_shape).total_macs,
                         layer_table(model, input_shape).total_macs, search, details)
    record_module_metrics(module)
    return module


def record_module_metrics(module: ClassModule) -> None:
    """Write what the split measured into the module's checkpoint metadata (if it has any)."""
    meta = getattr(module.model, "neurotomy_meta", None)
    if meta is not None:
        meta.metrics = {"module": {"class_index": module.class_index, "kept_fraction": module.kept_fraction,
                                   "search": module.search,
                                   **{k: v for k, v in module.details.items() if k not in ("trace", "history")}}}


def module_class_index(module: nn.Module) -> int:
    """The class a saved module answers for (from its recipe's ``binary_head`` step)."""
    meta = getattr(module, "neurotomy_meta", None)
    steps = [s for s in (meta.recipe if meta else []) if s.get("op") == "binary_head"]
    if not steps:
        raise NeurotomyError("this model is not a class module (no binary_head step in its recipe); "
                             "make one with `neurotomy split`")
    return int(steps[-1]["class_index"])


@torch.no_grad()
def module_scores(module: nn.Module, data: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's probability of "c" for every image of ``data`` (in order), and the targets."""
    module.eval()
    probs, targets = [], []
    for images, y in iterate_batches(data, batch_size):
        probs.append(module(to_device(model_device(module), images)).softmax(1)[:, 1].cpu())
        targets.append(y)
    return torch.cat(probs), torch.cat(targets)


def module_metrics(module: nn.Module, data: Dataset, class_index: int | None = None) -> dict:
    """One-vs-rest accuracy (on ``data`` as it is), balanced accuracy, precision and recall of c."""
    c = module_class_index(module) if class_index is None else class_index
    probs, targets = module_scores(module, data)
    said, is_c = probs >= 0.5, targets == c
    tp = int((said & is_c).sum())
    precision = tp / max(1, int(said.sum()))
    recall = tp / max(1, int(is_c.sum()))
    specificity = int((~said & ~is_c).sum()) / max(1, int((~is_c).sum()))
    return {"class": c, "ovr_accuracy": float((said == is_c).double().mean()),
            "balanced_accuracy": (recall + specificity) / 2, "precision": precision, "recall": recall}


def cohesion(kept: dict[str, list[int]], class_scores: UnitScores) -> float:
    """Mean rank-normalised relevance to the class of the kept filters (random keeping gives 0.5)."""
    ranks = class_scores.normalized("rank")
    values = [float(ranks[n][i]) for n, idx in kept.items() if n in ranks for i in idx]
    return sum(values) / max(1, len(values))


def module_set_metrics(modules: list[ClassModule]) -> dict:
    """Coupling (mean pairwise Jaccard overlap of kept filters) and mean cohesion of a set of modules."""
    pairs = [(a, b) for i, a in enumerate(modules) for b in modules[i + 1:]]
    coupling = sum(jaccard(a.kept, b.kept) for a, b in pairs) / max(1, len(pairs))
    cohesions = [m.details["cohesion"] for m in modules if "cohesion" in m.details]
    return {"coupling": coupling, "cohesion": sum(cohesions) / max(1, len(cohesions)), "modules": len(modules)}
