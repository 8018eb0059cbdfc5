"""Copies of a model to cut: made sharing its tensors, then owning them.

A cut never changes a tensor in place: torch-pruning and our head/neuron surgery give each narrowed
layer new, smaller tensors. So a copy to cut need not start as a full deep copy — it can hold the
model's own tensors (:func:`sharing_copy`) and cost only what the cuts make; once cut, the tensors it
still shares are cloned (:func:`owning`) so that training it can never change the model. A search
that cuts ~20 candidates of a ViT-B (341 MB each) and runs each once never needs the clones.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    >>> work = sharing_copy(model)
    >>> work[0].weight is model[0].weight
    True
    >>> work[0] = nn.Linear(2, 2)  # a cut: a new layer / new tensors
    >>> owned = owning(work, model)
    >>> owned[1].weight is model[1].weight, torch.equal(owned[1].weight, model[1].weight)
    (False, True)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from neurotomy.device import release_memory


def sharing_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``'s modules holding ``model``'s own parameter and buffer tensors: run
    it or cut it, never train it or change its tensors in place (see :func:`owning`). The garbage of
    an earlier copy is collected first (a traced dependency graph keeps its copy alive in a cycle)."""
    release_memory()
    return copy.deepcopy(model, {id(t): t for t in (*model.parameters(), *model.buffers())})


def owning(work: nn.Module, model: nn.Module) -> nn.Module:
    """``work`` (a cut :func:`sharing_copy` of ``model``) with each parameter and buffer it still
    shares with ``model`` replaced by a clone, in place; weights tied inside ``work`` stay tied (one
    clone per shared tensor)."""
    theirs = {id(t) for t in (*model.parameters(), *model.buffers())}
    clones: dict[int, torch.Tensor] = {}
    for module in work.modules():
        for name, param in module._parameters.items():
            if param is not None and id(param) in theirs:
                if id(param) not in clones:
                    clones[id(param)] = nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
                module._parameters[name] = clones[id(param)]
        for name, buffer in module._buffers.items():
            if buffer is not None and id(buffer) in theirs:
                if id(buffer) not in clones:
                    clones[id(buffer)] = buffer.clone()
                module._buffers[name] = clones[id(buffer)]
    return work
