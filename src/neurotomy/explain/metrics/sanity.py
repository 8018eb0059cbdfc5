"""Sanity checks by model parameter randomisation (Adebayo et al., NeurIPS 2018, §3.1).

If a map explains the model, destroying the model must change the map. *Cascading* randomisation
re-initialises the trained layers from the output back to the input, one parameterised block at a
time, recomputing the maps after each step; *independent* randomisation re-initialises one block
at a time, the others trained. Each step is compared with the trained model's maps by Spearman rank
correlation of absolute maps, of signed maps, and SSIM of the absolute maps scaled to [0, 1] (the
paper's three measures, §3.1 and Fig. 2). A method passes if similarity falls; the Sobel control,
which ignores the model, must stay at 1.

Blocks follow the *execution* order, found by a forward pass (module registration order need not
match it); a normalisation layer joins the block of the layer that runs right before it, so a
conv and its BatchNorm are randomised together. Everything happens on deep copies: the caller's
model is never touched.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(2 * 16, 3))
    >>> execution_blocks(model, torch.zeros(1, 1, 4, 4))
    [['0', '1'], ['4']]
    >>> from neurotomy.explain.metrics.controls import sobel_map
    >>> sobel = lambda m, x, t: sobel_map(x)
    >>> record = cascading_randomization(model, torch.randn(2, 1, 4, 4), sobel, quiet=True)
    >>> [round(step["spearman_abs"], 6) for step in record["steps"]]
    [1.0, 1.0]
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from neurotomy.explain.metrics.checks import (Explainer, MetricError, Targets, check_inputs,
                                              explain, resolve_targets)
from neurotomy.explain.metrics.similarity import spearman, ssim
from neurotomy.models.anatomy import execution_order
from neurotomy.progress import add_task, progress_bar


def is_normalisation(module: nn.Module) -> bool:
    """BatchNorm/InstanceNorm (any dimension: the modules with running statistics), GroupNorm, LayerNorm."""
    return has_running_stats(module) or isinstance(module, (nn.GroupNorm, nn.LayerNorm))


def has_running_stats(module: nn.Module) -> bool:
    """True for torch's BatchNorm and InstanceNorm family (every subclass of its private ``_NormBase``,
    recognised by the method that base defines, so no private name is imported)."""
    return callable(getattr(module, "reset_running_stats", None))


def execution_blocks(model: nn.Module, inputs: torch.Tensor) -> list[list[str]]:
    """:func:`execution_order` grouped into randomisation blocks: a normalisation layer joins the
    layer that ran just before it (re-initialising a BatchNorm alone is not a layer of the paper)."""
    modules = dict(model.named_modules())
    blocks: list[list[str]] = []
    check_inputs(inputs)
    order = execution_order(model, inputs)
    # the root's own parameters (a ViT's class token and position embedding) enter next to the input,
    # though the root's hook fires last: they are the first block, randomised last
    order = [name for name in order if name == ""] + [name for name in order if name != ""]
    for name in order:
        if blocks and is_normalisation(modules[name]):
            blocks[-1].append(name)
        else:
            blocks.append([name])
    return blocks


def randomize_modules(model: nn.Module, names: Sequence[str], seed: int = 0) -> None:
    """Re-initialise the named modules *in place* with their own initialiser (``reset_parameters``;
    BatchNorm also forgets its running statistics), drawing from ``seed`` without touching the global
    random state. A module without an initialiser whose own parameters are bare tensors (a ViT's class
    token and position embedding live on the model itself) has them re-drawn from a normal
    distribution of their current standard deviation (0.02, ViT's initialiser, where that is 0)."""
    modules = dict(model.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            module = modules[name]
            own = list(module.parameters(recurse=False))
            if not hasattr(module, "reset_parameters") and own:
                with torch.no_grad():
                    for parameter in own:
                        std = float(parameter.std()) if parameter.numel() > 1 else 0.0
                        parameter.normal_(0.0, std if std > 0 else 0.02)
                continue
            if not hasattr(module, "reset_parameters"):
                raise MetricError(f"layer {name!r} ({type(module).__name__}) has no reset_parameters(); "
                                  "pass blocks= without it")
            if has_running_stats(module):
                module.reset_running_stats()
            module.reset_parameters()


def map_similarity(reference: torch.Tensor, maps: torch.Tensor) -> dict[str, float]:
    """Adebayo et al.'s three measures, averaged over images: Spearman of |maps|, Spearman of the
    signed maps, and SSIM of |maps| each scaled to [0, 1] by its maximum."""
    def unit(m: torch.Tensor) -> torch.Tensor:
        magnitude = m.abs()
        return magnitude / magnitude.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)

    win = min(7, *reference.shape[1:])
    win -= 1 - win % 2  # largest odd window that fits
    return {
        "spearman_abs": float(spearman(reference.abs(), maps.abs()).mean()),
        "spearman_signed": float(spearman(reference, maps).mean()),
        "ssim": float(ssim(unit(reference), unit(maps), data_range=1.0, win_size=win).mean()),
    }


def _prepare(model: nn.Module, inputs: torch.Tensor, explainer: Explainer, targets: Targets,
             blocks: Sequence[Sequence[str]] | None) -> tuple[list[list[str]], torch.Tensor, torch.Tensor]:
    check_inputs(inputs)
    trained = copy.deepcopy(model).eval()
    targets = resolve_targets(trained, inputs, targets)
    blocks = [list(b) for b in blocks] if blocks is not None else execution_blocks(trained, inputs)
    known = dict(trained.named_modules())
    for block in blocks:
        for name in block:
            if name not in known:
                raise MetricError(f"model has no layer {name!r}; see `neurotomy info` for layer names")
    reference = explain(explainer, trained, inputs, targets)
    return blocks, targets, reference


def _randomization(model: nn.Module, inputs: torch.Tensor, explainer: Explainer, targets: Targets,
                   blocks: Sequence[Sequence[str]] | None, seed: int, cascading: bool, quiet: bool | None) -> dict:
    blocks, targets, reference = _prepare(model, inputs, explainer, targets, blocks)
    order = list(reversed(blocks))  # from the output back to the input (§3.1)
    steps = []
    randomized = copy.deepcopy(model).eval()
    with progress_bar(quiet) as bar:
        task = add_task(bar, "cascading" if cascading else "independent", len(order))
        for index, block in enumerate(order):
            if not cascading:
                randomized = copy.deepcopy(model).eval()
            randomize_modules(randomized, block, seed + index)
            maps = explain(explainer, randomized, inputs, targets)
            steps.append({"block": "+".join(block), "layers": list(block), **map_similarity(reference, maps)})
            bar.advance(task)
    return {"mode": "cascading" if cascading else "independent", "seed": seed, "n": int(len(inputs)),
            "steps": steps}


def cascading_randomization(model: nn.Module, inputs: torch.Tensor, explainer: Explainer,
                            targets: Targets = None, blocks: Sequence[Sequence[str]] | None = None,
                            seed: int = 0, quiet: bool | None = None) -> dict:
    """Randomise blocks cumulatively from the output back to the input; after each step compare the
    maps with the trained model's. ``targets=None`` explains the *trained* model's predicted classes,
    and the same classes are explained at every step. Returns ``{"mode", "seed", "n", "steps": [{"block",
    "layers", "spearman_abs", "spearman_signed", "ssim"}, ...]}``, steps in randomisation order."""
    return _randomization(model, inputs, explainer, targets, blocks, seed, True, quiet)


def independent_randomization(model: nn.Module, inputs: torch.Tensor, explainer: Explainer,
                              targets: Targets = None, blocks: Sequence[Sequence[str]] | None = None,
                              seed: int = 0, quiet: bool | None = None) -> dict:
    """Randomise one block at a time (the rest trained), output block first; same record as
    :func:`cascading_randomization`."""
    return _randomization(model, inputs, explainer, targets, blocks, seed, False, quiet)
