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

3. **Cut** with torch-pruning (the recipe records it), replace the classifier by a c-vs-rest head
   initialised from the old one (row 1 = W_c, row 0 = the mean of the other rows), and fine-tune
   briefly on a balanced c-vs-rest set, then shift the head's bias by the log prior odds of c in
   the data (the paper does not retrain; the issue asks for a short fine-tune, ``finetune_epochs=0``
   skips it).

Module metrics (:func:`module_metrics`): one-vs-rest accuracy on the test set as it is, balanced
accuracy, precision and recall of c. Across modules (:func:`module_set_metrics`): **coupling**, the
mean Jaccard overlap of the kept conv filters of two modules; **cohesion**, the mean relevance of a
module's kept filters to its own class, each filter's class-c score rank-normalised in its layer
(0 = least relevant, 1 = most; keeping filters at random gives 0.5).

Example:
    >>> from neurotomy.models.zoo import load_model
    >>> from neurotomy.data import load_dataset
    >>> model, data = load_model("zoo:lenet5-digits"), load_dataset("digits")
    >>> module = split(model, data, class_index=3, finetune_epochs=0, calibration_images=100, quiet=True)
    >>> module.model(data[0][0][None]).shape, 0 < module.kept_fraction <= 1
    (torch.Size([1, 2]), True)
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.data.tensor_dataset import TensorImageDataset
from neurotomy.errors import DataError, NeurotomyError
from neurotomy.models.anatomy import classifier_layer, model_input_shape, num_classes_of
from neurotomy.models.summary import layer_table
from neurotomy.progress import add_task, progress_bar
from neurotomy.scores.class_subsets import penultimate_features
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.filters import _Planner, Cut, apply_cuts, mask_filters

SEARCHES = ("threshold", "ga")


@dataclass
class GAConfig:
    """The genetic search, scaled down from the paper's population 100 × 200 generations."""

    population: int = 16
    generations: int = 10
    groups: int = 8  # relevance groups per layer (paper: 10 per layer in simple CNNs)
    mutation: float = 0.15  # chance that a gene moves by ±1
    elite: int = 2


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

def _as_tensors(data: Dataset) -> TensorImageDataset:
    if isinstance(data, TensorImageDataset):
        return data
    images, targets = zip(*iterate_batches(data, 256))
    return TensorImageDataset(torch.cat(images), torch.cat(targets), list(getattr(data, "classes", [])),
                              getattr(data, "normalization", None), getattr(data, "name", ""))


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
    data = _as_tensors(data)
    generator = torch.Generator().manual_seed(seed)
    is_c = data.targets == class_index
    positives = torch.nonzero(is_c)[:, 0]
    negatives = torch.nonzero(~is_c)[:, 0]
    if len(positives) == 0:
        raise DataError(f"the data has no image of class {class_index}; give data that covers every class")
    per_side = min(len(positives), len(negatives))
    if max_images is not None:
        per_side = min(per_side, max(1, max_images // 2))
    pick = torch.cat([positives[torch.randperm(len(positives), generator=generator)[:per_side]],
                      negatives[torch.randperm(len(negatives), generator=generator)[:per_side]]])
    name = data.classes[class_index] if class_index < len(data.classes) else str(class_index)
    return TensorImageDataset(data.images[pick], is_c[pick].long(), [f"not {name}", name],
                              data.normalization, data.name)


# ---------------------------------------------------------------- the binary head

def replace_with_binary_head(model: nn.Module, layer: str, class_index: int | None = None) -> nn.Linear:
    """Replace Linear ``layer`` by a c-vs-rest Linear (2 outputs, output 1 = c), in place.

    With ``class_index`` the new rows start from the old head: row 1 = W_c, row 0 = mean of the
    other rows (bias likewise, plus log(C − 1) so the "rest" logit starts near a log-sum-exp of
    the other classes' logits). Without it (rebuilding from a recipe) the rows are fresh.
    """
    parent_name, _, child = layer.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    if not isinstance(old, nn.Linear):
        raise NeurotomyError(f"layer {layer!r} is not a Linear classifier")
    head = nn.Linear(old.in_features, 2, bias=old.bias is not None)
    if class_index is not None:
        with torch.no_grad():
            others = [j for j in range(old.out_features) if j != class_index]
            head.weight[1] = old.weight[class_index]
            head.weight[0] = old.weight[others].mean(0)
            if old.bias is not None:
                head.bias[1] = old.bias[class_index]
                head.bias[0] = old.bias[others].mean() + math.log(max(1, len(others)))
    setattr(parent, child, head)
    return head


# ---------------------------------------------------------------- scoring candidates

class _Candidates:
    """Evaluates "drop counts[g] least relevant channels of group g" by masking a working copy."""

    def __init__(self, model: nn.Module, scores: UnitScores, class_index: int, calibration: TensorImageDataset,
                 input_shape: tuple[int, ...]) -> None:
        head_name, _ = classifier_layer(model)
        self.planner = _Planner(model, scores, input_shape, [dict(model.named_modules())[head_name]],
                                min_channels=1, round_to=None, inner_only=False)
        self.model, self.class_index, self.input_shape = model, class_index, input_shape
        self.work = copy.deepcopy(model).eval()
        self.original = {k: v.clone() for k, v in model.state_dict().items()}
        self.calibration = calibration
        self.channels = [g.channels for g in self.planner.groups]
        self.conv_filters = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        self.evaluations = 0

    def cuts(self, counts: list[int]) -> list[Cut]:
        return self.planner.cuts_for_counts(counts)

    @torch.no_grad()
    def balanced_accuracy(self, counts: list[int]) -> float:
        """Balanced c-vs-rest accuracy that a linear c-vs-rest head reads from the masked model's
        penultimate features: a ridge fit on half the calibration set, scored on the other half.

        The module gets a new binary head anyway, so a candidate is judged by what that head can
        recover; the old head's argmax stops meaning anything once other classes' filters go.
        """
        self.work.load_state_dict(self.original)
        mask_filters(self.work, self.cuts(counts), self.input_shape, groups=self.planner.groups)
        self.evaluations += 1
        features = penultimate_features(self.work, self.calibration, quiet=True)
        return _ridge_balanced_accuracy(features.features.double(), features.targets)

    def kept_filters(self, counts: list[int]) -> dict[str, list[int]]:
        """Conv layer → kept filter indices, for these drop counts (layers not in any group keep all)."""
        removed: dict[str, set[int]] = {}
        by_root = {g.root_name: g for g in self.planner.groups}
        for cut in self.cuts(counts):
            chosen = set(cut.idxs)
            for m in by_root[cut.layer].out_layers:
                if isinstance(m.module, nn.Conv2d):
                    removed.setdefault(m.name, set()).update(i for i, r in zip(m.idxs, m.root_idxs) if r in chosen)
        return {n: [i for i in range(c) if i not in removed.get(n, set())] for n, c in self.conv_filters.items()}

    def kept_fraction(self, counts: list[int]) -> float:
        kept = self.kept_filters(counts)
        return sum(map(len, kept.values())) / sum(self.conv_filters.values())


def _ridge_balanced_accuracy(x: torch.Tensor, y: torch.Tensor, alpha: float = 1e-2) -> float:
    """Fit ±1 targets by ridge regression on the even rows, balanced accuracy on the odd rows."""
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    fit_x, fit_y, test_x, test_y = x[0::2], y[0::2], x[1::2], y[1::2]
    gram = fit_x.T @ fit_x
    ridge = alpha * gram.diagonal().mean().clamp(min=1e-12) * torch.eye(len(gram), dtype=x.dtype)
    w = torch.linalg.solve(gram + ridge, fit_x.T @ (2.0 * fit_y.double() - 1))
    said = (test_x @ w > 0).long()
    recalls = [float((said[test_y == t] == t).double().mean()) if (test_y == t).any() else 1.0 for t in (0, 1)]
    return sum(recalls) / 2


def _jaccard(a: dict[str, list[int]], b: dict[str, list[int]]) -> float:
    sa = {(n, i) for n, idx in a.items() for i in idx}
    sb = {(n, i) for n, idx in b.items() for i in idx}
    return len(sa & sb) / max(1, len(sa | sb))


def _threshold_search(cand: _Candidates, tolerance: float, quiet: bool) -> tuple[list[int], dict]:
    """Smallest kept fraction q (grid 1.0, 0.95, …, 0.05), the same in every group, whose masked
    balanced accuracy stays ≥ tolerance × the full model's."""
    full = cand.balanced_accuracy([0] * len(cand.channels))
    best, best_acc, trace = [0] * len(cand.channels), full, []
    grid = [round(1 - 0.05 * i, 2) for i in range(1, 20)]
    with progress_bar(quiet) as bar:
        task = add_task(bar, f"threshold search, class {cand.class_index}", len(grid))
        for q in grid:
            counts = [c - max(1, math.ceil(q * c)) for c in cand.channels]
            acc = cand.balanced_accuracy(counts)
            trace.append({"keep": q, "balanced_accuracy": acc})
            bar.advance(task)
            if acc < tolerance * full:
                break  # relevance-ordered drops: accuracy falls (nearly) monotonically from here
            best, best_acc = counts, acc
    return best, {"full_balanced_accuracy": full, "masked_balanced_accuracy": best_acc, "trace": trace}


def _ga_search(cand: _Candidates, config: GAConfig, others: list[dict[str, list[int]]], seed: int,
               quiet: bool) -> tuple[list[int], dict]:
    """The paper's genetic search, scaled down (see the module docstring for the encoding)."""
    rng = random.Random(seed)
    groups = config.groups

    def counts_of(genome: list[int]) -> list[int]:
        return [c - max(1, math.ceil(c * gene / groups)) for c, gene in zip(cand.channels, genome)]

    cache: dict[tuple, tuple[float, float, float]] = {}

    def fitness(genome: list[int]) -> float:
        key = tuple(genome)
        if key not in cache:
            counts = counts_of(genome)
            acc = cand.balanced_accuracy(counts)
            kept = cand.kept_filters(counts)
            overlap = (sum(_jaccard(kept, o) for o in others) / len(others)) if others else cand.kept_fraction(counts)
            cache[key] = (0.9 * acc + 0.1 * (1 - overlap), acc, overlap)
        return cache[key][0]

    n_genes = len(cand.channels)
    population = [[groups] * n_genes]  # the whole model is a valid start
    while len(population) < config.population:
        population.append([rng.randint(1, groups) for _ in range(n_genes)])
    history = []
    with progress_bar(quiet) as bar:
        task = add_task(bar, f"genetic search, class {cand.class_index}", config.generations)
        for generation in range(config.generations):
            ranked = sorted(population, key=fitness, reverse=True)
            history.append({"generation": generation, "best_fitness": fitness(ranked[0])})
            children = [list(g) for g in ranked[:config.elite]]
            while len(children) < config.population:
                a = max(rng.sample(ranked, 3), key=fitness)  # tournament selection
                b = max(rng.sample(ranked, 3), key=fitness)
                child = [x if rng.random() < 0.5 else y for x, y in zip(a, b)]  # uniform crossover
                child = [min(groups, max(1, g + rng.choice((-1, 1)))) if rng.random() < config.mutation else g
                         for g in child]
                children.append(child)
            population = children
            bar.advance(task)
    best = max(population, key=fitness)
    score, acc, overlap = cache[tuple(best)]
    return counts_of(best), {"full_balanced_accuracy": cand.balanced_accuracy([0] * n_genes),
                             "masked_balanced_accuracy": acc, "fitness": score, "overlap": overlap,
                             "evaluations": len(cache), "history": history, "ga": asdict(config)}


# ---------------------------------------------------------------- split

def split(model: nn.Module, data: Dataset, class_index: int, *, scores: UnitScores | None = None,
          search: str = "threshold", tolerance: float = 0.99, calibration_images: int = 500,
          finetune_epochs: int = 1, finetune_lr: float = 0.01, finetune_images: int | None = 2000,
          ga: GAConfig | None = None, others: list[dict[str, list[int]]] | None = None,
          seed: int = 0, quiet: bool = False) -> ClassModule:
    """The module of class ``class_index`` (the issue's ``class=c``; ``class`` is a Python keyword).

    ``data`` is training data: it gives the relevance scores (when ``scores`` is None), the
    balanced calibration set the search judges candidates on, and the fine-tune set.
    """
    from neurotomy.scores.classwise import ClassActivation
    from neurotomy.train import TrainConfig, fit

    classes = num_classes_of(model, data)
    if not 0 <= class_index < classes:
        raise NeurotomyError(f"class index {class_index} is out of range; the model has classes 0…{classes - 1}")
    if search not in SEARCHES:
        raise NeurotomyError(f"unknown search {search!r}; use threshold or ga")
    input_shape = model_input_shape(model, data)
    if input_shape is None:
        raise NeurotomyError("the model carries no input shape; load it with neurotomy.load_model")
    model = model.eval()
    if scores is None:
        scores = ClassActivation()(model, data, seed=seed, quiet=quiet)
    counted = scores.info.get("images_per_class")
    if counted is not None and counted[class_index] == 0:
        raise NeurotomyError(f"no image of class {class_index} counted for the relevance scores (none classified "
                             "confidently?); give more data or scores from another class-wise criterion")
    calibration = one_vs_rest(data, class_index, calibration_images, seed=seed)
    cand = _Candidates(model, scores.for_class(class_index), class_index, calibration, input_shape)
    if search == "threshold":
        counts, details = _threshold_search(cand, tolerance, quiet)
    else:
        counts, details = _ga_search(cand, ga or GAConfig(), others or [], seed, quiet)
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
    if finetune_epochs > 0:
        train = one_vs_rest(data, class_index, finetune_images, seed=seed + 1)
        fit(pruned, train, TrainConfig(epochs=finetune_epochs, lr=finetune_lr, schedule="cosine", seed=seed,
                                       batch_size=64, quiet=quiet), description=f"fine-tune module {class_index}")
        _shift_to_prior(pruned, head_name, data, class_index)
    pruned.eval()
    macs = layer_table(pruned, input_shape).total_macs
    details.update({"finetune_epochs": finetune_epochs, "criterion": scores.criterion,
                    "cohesion": cohesion(kept, scores.for_class(class_index))})
    if meta is not None:
        meta.metrics = {"module": {"class_index": class_index, "kept_fraction": kept_fraction,
                                   "search": search, **{k: v for k, v in details.items() if k not in ("trace", "history")}}}
    return ClassModule(pruned, class_index, kept, kept_fraction, macs, layer_table(model, input_shape).total_macs,
                       search, details)


@torch.no_grad()
def _shift_to_prior(model: nn.Module, head_name: str, data: Dataset, class_index: int) -> None:
    """Fine-tuning on a balanced set teaches the head a 50 % prior for c; add log(p/(1 − p)), p the
    class's frequency in ``data``, so the module answers on the data's own class frequencies."""
    targets = _as_tensors(data).targets
    p = float((targets == class_index).double().mean())
    if 0 < p < 1:
        model.get_submodule(head_name).bias[1] += math.log(p / (1 - p))


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
        probs.append(module(images).softmax(1)[:, 1])
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
    coupling = sum(_jaccard(a.kept, b.kept) for a, b in pairs) / max(1, len(pairs))
    cohesions = [m.details["cohesion"] for m in modules if "cohesion" in m.details]
    return {"coupling": coupling, "cohesion": sum(cohesions) / max(1, len(cohesions)), "modules": len(modules)}
