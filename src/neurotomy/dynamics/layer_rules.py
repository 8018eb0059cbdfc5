"""Layer rules: which blocks a layer prune removes (residual blocks, or a plain network's conv blocks).

A rule is a function ``rule(model, data, count=..., threshold=..., seed=..., per_class=..., quiet=...)
-> (block names, basis)`` registered in :data:`LAYER_RULES`; ``basis`` records what the choice
rested on (the modularity curve, the seed, the similarities). Down-sampling blocks (in a plain
network: blocks that change the channel count) are never chosen by a rule
(:func:`neurotomy.models.anatomy.removable_blocks`). The removal itself is surgery
(:func:`neurotomy.surgery.layers.remove_blocks`).

* ``modularity`` — Lu et al., ECCV 2022: blocks whose ΔQ is below ``threshold`` × the curve's
  mean per-layer rise, tail first (or the ``count`` smallest ΔQ) — :meth:`ModularityCurve.redundant`;
* ``cka`` — a data criterion without labels: the ``count`` blocks whose output is most like their
  input, by linear CKA (Kornblith et al., ICML 2019) on ``per_class`` images per class — a block
  that barely changes its representation is the cheapest to lose (:func:`block_similarity`);
* ``random`` — ``count`` removable blocks drawn with ``seed``;
* ``last`` — the last ``count`` removable blocks.

Example:
    >>> from neurotomy.models import build_model
    >>> choose_blocks(build_model("resnet20", 1, 10, 8), "last", count=2)
    (['layer3.1', 'layer3.2'], {'method': 'last'})
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.data.labels import dataset_targets
from neurotomy.data.subsets import IndexedSubset, balanced_indices
from neurotomy.device import model_device, to_device
from neurotomy.dynamics.features import INPUT_SUFFIX, reading
from neurotomy.dynamics.modularity import modularity_curve
from neurotomy.dynamics.similarity import cka_from_grams
from neurotomy.errors import PruningError
from neurotomy.models.anatomy import block_input_module, eval_mode, removable_blocks
from neurotomy.registry import Registry

LayerRule = Callable[..., tuple[list[str], dict]]
LAYER_RULES: Registry[LayerRule] = Registry("layer rule", PruningError, hint="or a comma-separated list of blocks")


@LAYER_RULES.register("modularity", paper="Lu et al., ECCV 2022")
def modularity_rule(model: nn.Module, data: Dataset | None, *, count: int | None, threshold: float, seed: int,
                    per_class: int, quiet: bool) -> tuple[list[str], dict]:
    if data is None:
        raise PruningError("the modularity rule needs data; pass --data")
    curve = modularity_curve(model, data, per_class=per_class, seed=seed, quiet=quiet)
    chosen = curve.redundant(removable_blocks(model), threshold=threshold, count=count)
    return chosen, {"method": "modularity", "curve": curve.to_dict(), "threshold": threshold}


def _counted(model: nn.Module, rule: str, count: int | None) -> list[str]:
    candidates = removable_blocks(model)
    if count is None:
        raise PruningError(f"layer method {rule!r} needs a number of blocks: give --blocks N")
    if count > len(candidates):
        if not candidates:
            raise PruningError("the model has no removable block: no residual block (a module that adds its input to "
                               "a branch), transformer block, or plain conv block whose activation a module of its "
                               "own returns; prune filters instead (--criterion, --target-macs)")
        raise PruningError(f"cannot remove {count} blocks: only {len(candidates)} are removable "
                           f"({', '.join(candidates)})")
    return candidates


def _descending(value: float) -> float:
    """Sort key: larger values first, NaN after every number."""
    return math.inf if math.isnan(value) else -value


@torch.no_grad()
def block_similarity(model: nn.Module, data: Dataset, blocks: list[str], per_class: int = 50,
                     seed: int = 0) -> dict[str, float]:
    """Linear CKA of each block's output with its input, on ``per_class`` images of each class.

    One forward pass over the sample; each hook reduces its map to the n × n Gram matrix at once,
    so memory is one Gram per block, never the features of every block.

    Example:
        >>> from neurotomy.data import load_dataset
        >>> from neurotomy.models import build_model
        >>> sims = block_similarity(build_model("resnet20", 1, 10, 28), load_dataset("fashion-mnist"),
        ...                         ["layer3.2"], per_class=5)
        >>> 0 < sims["layer3.2"] <= 1
        True
    """
    targets = dataset_targets(data)
    inputs = {block_input_module(model, b) + INPUT_SUFFIX: b for b in blocks}
    grams: dict[tuple[str, str], torch.Tensor] = {}

    def reduce(layer: str, features: torch.Tensor) -> None:
        flat = features.flatten(1).double().cpu()
        if layer in inputs:
            grams[inputs[layer], "input"] = flat @ flat.T
        if layer in blocks:
            grams[layer, "output"] = flat @ flat.T

    subset = IndexedSubset(data, balanced_indices(targets, per_class, seed))
    images, _ = next(iterate_batches(subset, len(subset)))
    with eval_mode(model), reading(model, sorted(set(inputs) | set(blocks)), reduce):
        model(to_device(model_device(model), images))
    return {b: cka_from_grams(grams[b, "input"], grams[b, "output"]) for b in blocks}


@LAYER_RULES.register("cka", paper="control: linear CKA of block output with input (Kornblith et al., ICML 2019)")
def cka_rule(model: nn.Module, data: Dataset | None, *, count: int | None, seed: int, per_class: int,
             **_) -> tuple[list[str], dict]:
    if data is None:
        raise PruningError("the cka rule needs data; pass --data")
    candidates = _counted(model, "cka", count)
    similarity = block_similarity(model, data, candidates, per_class=per_class, seed=seed)
    # most similar first; among equals the later block (tail first, as the modularity rule); a block
    # with a constant input or output (CKA NaN, undefined) last, as the least similar
    ranked = sorted(reversed(candidates), key=lambda block: _descending(similarity[block]))[:count]
    return [b for b in candidates if b in ranked], {"method": "cka", "cka": similarity, "seed": seed}


@LAYER_RULES.register("random", paper="control")
def random_rule(model: nn.Module, data: Dataset | None, *, count: int | None, seed: int, **_) -> tuple[list[str], dict]:
    candidates = _counted(model, "random", count)
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed)).tolist()
    return [candidates[i] for i in sorted(order[:count])], {"method": "random", "seed": seed}


@LAYER_RULES.register("last", paper="control")
def last_rule(model: nn.Module, data: Dataset | None, *, count: int | None, **_) -> tuple[list[str], dict]:
    candidates = _counted(model, "last", count)
    return candidates[len(candidates) - count:], {"method": "last"}


def choose_blocks(model: nn.Module, method: str, data: Dataset | None = None, count: int | None = None,
                  threshold: float = 0.25, seed: int = 0, per_class: int = 100,
                  quiet: bool = False) -> tuple[list[str], dict]:
    """Blocks to remove by the rule ``method`` (see :data:`LAYER_RULES`), or the blocks of a
    comma-separated list; and what the choice was based on."""
    if method not in LAYER_RULES:
        return [name.strip() for name in method.split(",") if name.strip()], {"method": "list"}
    return LAYER_RULES.get(method)(model, data, count=count, threshold=threshold, seed=seed, per_class=per_class,
                                   quiet=quiet)


__all__ = ["LAYER_RULES", "block_similarity", "choose_blocks"]
