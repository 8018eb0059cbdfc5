"""Torch-Pruning's own pipelines as the CNN baselines of the pruning benchmarks.

``tp_bisect`` runs ``torch_pruning.pruner.MetaPruner`` (its actual pruner, not our planner fed its
importance) with the classifier ignored, bisecting its one ``pruning_ratio`` until the MACs reduction
lands within ``tolerance`` of the target. The removed indices torch-pruning records
(``pruner.pruning_history()``) are replayed through neurotomy's surgery
(:func:`neurotomy.surgery.filters.apply_cuts`) and the two models checked to hold bit-identical
tensors, so a baseline carries a checkpoint recipe and is saved and reloaded like ours.

``benchmarks/pruning_criteria.py`` (``tp_default_prune``) and ``benchmarks/pruning_budget.py`` use it.

Example:
    >>> from neurotomy.models import build_model
    >>> model = build_model("resnet20", 1, 10, 8).eval()
    >>> pruned, info = tp_bisect(model, 0.5, (1, 8, 8), magnitude_l1)
    >>> abs(info["macs_reduction"] - 0.5) < 0.02, info["rebuilt_identical"], len(pruned.neurotomy_meta.recipe) > 0
    (True, True, True)
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.device import model_device, to_device
from neurotomy.errors import NeurotomyError
from neurotomy.models.summary import count_macs_params
from neurotomy.surgery.filters import apply_cuts
from neurotomy.surgery.planner import Cut, default_ignored

TP_TOLERANCE = 0.003  # the bisection stops within 0.3 pt of the MACs target
TP_BISECTIONS = 14


def magnitude_l1():
    """Torch-Pruning's default importance: the L1 norm of each group's weights (``MagnitudeImportance(p=1)``)."""
    return tp.importance.MagnitudeImportance(p=1)


def group_taylor():
    """Torch-Pruning's first-order Taylor importance of a group (reads ``param.grad``, see :func:`taylor_gradients`)."""
    return tp.importance.GroupTaylorImportance()


def taylor_gradients(model: nn.Module, data: Dataset, images: int, seed: int = 0,
                     batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Gradients of the batch-mean cross-entropy summed over ``images`` seeded training images, by
    parameter name — what torch-pruning's examples accumulate before ``GroupTaylorImportance`` reads
    ``param.grad``. ``model`` is not touched."""
    work = copy.deepcopy(model).eval()
    work.zero_grad(set_to_none=True)
    where = model_device(work)
    generator = torch.Generator().manual_seed(seed)
    for x, y in iterate_batches(data, batch_size, shuffle=True, generator=generator, max_images=images):
        x, y = to_device(where, x, y)
        nn.functional.cross_entropy(work(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in work.named_parameters() if p.grad is not None}


def tp_prune(model: nn.Module, ratio: float, shape: tuple[int, ...], importance: Callable[[], object],
             global_pruning: bool, grads: dict[str, torch.Tensor] | None = None) -> tuple[nn.Module, list[Cut]]:
    """One MetaPruner pass at ``ratio`` on a copy of ``model`` (classifier ignored); the pruned copy
    and its removed output channels as neurotomy cuts, in torch-pruning's order."""
    work = copy.deepcopy(model).eval()
    if grads is not None:
        for name, parameter in work.named_parameters():
            parameter.grad = grads[name].clone() if name in grads else None
    example = torch.zeros(1, *shape, device=model_device(work))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-pruning's notices about unwrapped parameters
        pruner = tp.pruner.MetaPruner(work, example, importance=importance(), pruning_ratio=ratio,
                                      global_pruning=global_pruning,
                                      ignored_layers=[work.get_submodule(n) for n in default_ignored(work)])
        pruner.step()
    cuts = []
    for name, out_channels, idxs in pruner.pruning_history():
        if not out_channels:  # MetaPruner roots its groups at conv/linear outputs; anything else is news
            raise NeurotomyError(f"torch-pruning pruned input channels of {name!r}; the baseline rebuild expects "
                                 "output-channel groups only (report this)")
        cuts.append(Cut(name, sorted(int(i) for i in idxs)))
    work.zero_grad(set_to_none=True)
    return work, cuts


def tp_bisect(model: nn.Module, target: float, shape: tuple[int, ...], importance: Callable[[], object],
              global_pruning: bool = False, grads: dict[str, torch.Tensor] | None = None,
              tolerance: float = TP_TOLERANCE, bisections: int = TP_BISECTIONS) -> tuple[nn.Module, dict]:
    """Torch-Pruning at the ``pruning_ratio`` (bisected in [0, 0.95]) whose MACs reduction is closest to
    ``target``; returns the model rebuilt through neurotomy's surgery from torch-pruning's indices
    (checked bit-identical to torch-pruning's) and ``{ratio, macs_reduction, bisection,
    rebuilt_identical}``. A ratio at which torch-pruning fails (a layer emptied) counts as an overshoot."""
    pruned, cuts, ratio, reduction, tries = bisect_ratio(
        lambda r: tp_prune(model, r, shape, importance, global_pruning, grads), count_macs_params(model, shape)[0],
        shape, target, tolerance, bisections)
    rebuilt = apply_cuts(model, cuts, shape)
    identical = require_identical(pruned, rebuilt)
    rebuilt.train(model.training)
    return rebuilt, {"ratio": ratio, "macs_reduction": reduction, "bisection": tries, "rebuilt_identical": identical}


def bisect_ratio(prune_at: Callable[[float], tuple[nn.Module, list]], base_macs: float, shape: tuple[int, ...],
                 target: float, tolerance: float = TP_TOLERANCE, bisections: int = TP_BISECTIONS,
                 what: str = "") -> tuple[nn.Module, list, float, float, list[dict]]:
    """Bisect torch-pruning's ratio in [0, 0.95] until ``prune_at(ratio)`` — (pruned model, cuts) —
    removes ``target`` of ``base_macs`` within ``tolerance``; returns the closest (pruned, cuts,
    ratio, reduction) and every try. A ratio at which torch-pruning fails (a layer emptied) counts as
    an overshoot."""
    lo, hi, best, tries = 0.0, 0.95, None, []
    for _ in range(bisections):
        mid = (lo + hi) / 2
        try:
            pruned, cuts = prune_at(mid)
            reduction = 1 - count_macs_params(pruned, shape)[0] / base_macs
        except Exception as exc:  # torch-pruning's own failure at a high ratio
            tries.append({"ratio": mid, "failed": f"{type(exc).__name__}: {str(exc)[:120]}"})
            hi = mid
            continue
        tries.append({"ratio": mid, "macs_reduction": reduction})
        if best is None or abs(reduction - target) < abs(best[3] - target):
            best = (pruned, cuts, mid, reduction)
        if abs(reduction - target) <= tolerance:
            break
        lo, hi = (mid, hi) if reduction < target else (lo, mid)
    if best is None:
        raise NeurotomyError(f"torch-pruning failed at every ratio tried{what}: {tries[-1]['failed']}")
    return (*best, tries)


def require_identical(pruned: nn.Module, rebuilt: nn.Module, what: str = "") -> bool:
    """True when ``rebuilt`` (neurotomy's surgery replaying torch-pruning's indices) holds exactly
    ``pruned``'s tensors; else an error, since the baseline could not be saved and reloaded."""
    a, b = pruned.state_dict(), rebuilt.state_dict()
    if not (a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)):
        raise NeurotomyError(f"{what}neurotomy's surgery with torch-pruning's indices does not give torch-pruning's "
                             "model; the baseline cannot be saved and reloaded (report this)")
    return True
