"""How a class module is found (CNNSplitter, Qi et al., ASE 2022, §3.3): candidate cuts judged
by masking, and the searches over them. :mod:`neurotomy.surgery.class_modules` explains the method;
this module holds the machinery.

A search is registered in :data:`CLASS_SEARCHES` and called as ``search(candidates, tolerance=…,
ga=…, others=…, seed=…, quiet=…) -> (drop counts per group, what it measured)``.

Example:
    >>> jaccard({"conv": [0, 1]}, {"conv": [1, 2]}), CLASS_SEARCHES.names()
    (0.3333333333333333, ['threshold', 'ga'])
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass

import torch
from torch import nn

from neurotomy.data.tensor_dataset import TensorImageDataset
from neurotomy.errors import NeurotomyError
from neurotomy.models.anatomy import classifier_layer
from neurotomy.progress import add_task, progress_bar
from neurotomy.registry import Registry
from neurotomy.scores.class_subsets import penultimate_features
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.filters import mask_filters
from neurotomy.surgery.planner import Cut, Planner

CLASS_SEARCHES: Registry = Registry("search", NeurotomyError)


@dataclass
class GAConfig:
    """The genetic search, scaled down from the paper's population 100 × 200 generations."""

    population: int = 16
    generations: int = 10
    groups: int = 8  # relevance groups per layer (paper: 10 per layer in simple CNNs)
    mutation: float = 0.15  # chance that a gene moves by ±1
    elite: int = 2


class ModuleCandidates:
    """Evaluates "drop counts[g] least relevant channels of group g" by masking a working copy."""

    def __init__(self, model: nn.Module, scores: UnitScores, class_index: int, calibration: TensorImageDataset,
                 input_shape: tuple[int, ...]) -> None:
        head_name, _ = classifier_layer(model)
        self.planner = Planner(model, scores, input_shape, [dict(model.named_modules())[head_name]],
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
        return ridge_balanced_accuracy(features.features.double(), features.targets)

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


def ridge_balanced_accuracy(x: torch.Tensor, y: torch.Tensor, alpha: float = 1e-2) -> float:
    """Fit ±1 targets by ridge regression on the even rows, balanced accuracy on the odd rows."""
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    fit_x, fit_y, test_x, test_y = x[0::2], y[0::2], x[1::2], y[1::2]
    gram = fit_x.T @ fit_x
    ridge = alpha * gram.diagonal().mean().clamp(min=1e-12) * torch.eye(len(gram), dtype=x.dtype)
    w = torch.linalg.solve(gram + ridge, fit_x.T @ (2.0 * fit_y.double() - 1))
    said = (test_x @ w > 0).long()
    recalls = [float((said[test_y == t] == t).double().mean()) if (test_y == t).any() else 1.0 for t in (0, 1)]
    return sum(recalls) / 2


def jaccard(a: dict[str, list[int]], b: dict[str, list[int]]) -> float:
    sa = {(n, i) for n, idx in a.items() for i in idx}
    sb = {(n, i) for n, idx in b.items() for i in idx}
    return len(sa & sb) / max(1, len(sa | sb))


@CLASS_SEARCHES.register("threshold")
def threshold_search(cand: ModuleCandidates, *, tolerance: float, quiet: bool, **_) -> tuple[list[int], dict]:
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


@CLASS_SEARCHES.register("ga", paper="Qi et al., ASE 2022, §3.3 (scaled down)")
def ga_search(cand: ModuleCandidates, *, ga: GAConfig | None, others: list[dict[str, list[int]]], seed: int,
              quiet: bool, **_) -> tuple[list[int], dict]:
    """The paper's genetic search, scaled down (see the module docstring for the encoding)."""
    config = ga or GAConfig()
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
            overlap = (sum(jaccard(kept, o) for o in others) / len(others)) if others else cand.kept_fraction(counts)
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
