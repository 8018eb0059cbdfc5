"""Layer rules: which residual blocks a layer prune removes.

A rule is a function ``rule(model, data, count=..., threshold=..., seed=..., per_class=..., quiet=...)
-> (block names, basis)`` registered in :data:`LAYER_RULES`; ``basis`` records what the choice
rested on (the modularity curve, the seed). Down-sampling blocks are never chosen by a rule
(:func:`neurotomy.models.anatomy.removable_blocks`). The removal itself is surgery
(:func:`neurotomy.surgery.layers.remove_blocks`).

* ``modularity`` — Lu et al., ECCV 2022: blocks whose ΔQ is below ``threshold`` × the curve's
  mean per-layer rise, tail first (or the ``count`` smallest ΔQ) — :meth:`ModularityCurve.redundant`;
* ``random`` — ``count`` removable blocks drawn with ``seed``;
* ``last`` — the last ``count`` removable blocks.

Example:
    >>> from neurotomy.models import build_model
    >>> choose_blocks(build_model("resnet20", 1, 10, 8), "last", count=2)
    (['layer3.1', 'layer3.2'], {'method': 'last'})
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.dynamics.modularity import modularity_curve
from neurotomy.errors import PruningError
from neurotomy.models.anatomy import removable_blocks
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
        raise PruningError(f"cannot remove {count} blocks: only {len(candidates)} are removable")
    return candidates


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


__all__ = ["LAYER_RULES", "choose_blocks"]
