"""Model anatomy: the questions every part of neurotomy asks of a model, answered once.

Which layer is the classifier, how many classes, what input shape, which modules a forward pass
runs and in what order, which modules are residual blocks, how to swap a submodule by name, and how
to run a model in eval mode without losing the caller's training flag.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    >>> classifier_layer(model)[0], num_classes_of(model)
    ('3', 3)
    >>> execution_order(model, torch.zeros(1, 1, 8, 8))
    ['0', '3']
    >>> _ = set_submodule(model, "1", nn.Identity()); type(model[1]).__name__
    'Identity'
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.errors import ModelError
from neurotomy.probe import Probe


def classifier_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """The final Linear layer (name, module): its inputs are the penultimate features."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("the model has no Linear classifier; neurotomy needs a model that ends in nn.Linear")
    return linears[-1]


def num_classes_of(model: nn.Module, data: Dataset | None = None) -> int:
    """Number of classes: from the checkpoint metadata, else the dataset, else the last Linear."""
    meta = getattr(model, "neurotomy_meta", None)
    if meta is not None and "num_classes" in meta.arch_args:
        return int(meta.arch_args["num_classes"])
    if data is not None and getattr(data, "classes", None):
        return len(data.classes)
    try:
        return classifier_layer(model)[1].out_features
    except ModelError:
        raise ModelError("cannot tell how many classes the model has; give data with a classes list") from None


def model_input_shape(model: nn.Module, data: Dataset | None = None) -> tuple[int, ...] | None:
    """``(C, H, W)`` of one input: from the checkpoint metadata, else the first image of ``data``."""
    meta = getattr(model, "neurotomy_meta", None)
    if meta is not None:
        return meta.input_shape
    if data is not None:
        return tuple(data[0][0].shape)
    return None


def require_input_shape(model: nn.Module, data: Dataset | None = None) -> tuple[int, ...]:
    """:func:`model_input_shape`, or an error that says how to supply one."""
    shape = model_input_shape(model, data)
    if shape is None:
        raise ModelError("the model carries no input shape; load it with neurotomy.load_model or pass "
                         "input_shape=(C, H, W)")
    return shape


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as deployed (BatchNorm on running statistics, dropout off); the caller's
    training flag is restored afterwards, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Replace the submodule called ``name`` by ``new`` in place; returns the old one."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def _own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def execution_order(model: nn.Module, inputs: torch.Tensor, modules: list[str] | None = None) -> list[str]:
    """Names of ``modules`` (default: those holding parameters of their own) in the order a
    forward pass on ``inputs[:1]`` runs them (a module used twice is listed at its first use;
    modules the pass never reaches are left out)."""
    names = modules if modules is not None else [n for n, m in model.named_modules() if _own_parameters(m)]
    ran: list[str] = []
    with torch.no_grad(), eval_mode(model), Probe(model, names, on_output=lambda name, _: ran.append(name)):
        model(inputs[:1])
    return list(dict.fromkeys(ran))


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of residual blocks: modules with a ``shortcut`` or ``downsample`` branch (our
    CIFAR ResNets, torchvision ResNets) or a ``use_residual`` flag (our MobileNetV2)."""
    names = []
    for name, module in model.named_modules():
        if name and (hasattr(module, "shortcut") or hasattr(module, "downsample")
                     or getattr(module, "use_residual", False)):
            names.append(name)
    return names


def block_shortcut(block: nn.Module) -> nn.Module | None:
    """The block's shortcut branch if it transforms its input, else None (identity)."""
    for attr in ("shortcut", "downsample"):
        branch = getattr(block, attr, None)
        if isinstance(branch, nn.Module) and not isinstance(branch, nn.Identity) and len(list(branch.parameters())):
            return branch
    return None


def is_downsampling(block: nn.Module) -> bool:
    return block_shortcut(block) is not None


def removable_blocks(model: nn.Module, keep_downsampling: bool = True) -> list[str]:
    """Blocks a layer-pruning rule may remove (by default: not the down-sampling ones)."""
    modules = dict(model.named_modules())
    return [b for b in residual_blocks(model) if not (keep_downsampling and is_downsampling(modules[b]))]


__all__ = ["block_shortcut", "classifier_layer", "eval_mode", "execution_order", "is_downsampling",
           "model_input_shape", "num_classes_of", "removable_blocks", "require_input_shape", "residual_blocks",
           "set_submodule"]
