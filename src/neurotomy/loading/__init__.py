"""From a file (or ``zoo:NAME``) to a working model: build the architecture the checkpoint names,
replay its surgery recipe, load the weights.

This floor sits above ``models/`` (architectures) and ``surgery/`` (the recipe's operations, the
patched model) so that neither of them needs the other or the file format: ``checkpoint.py``
knows only the file, ``models/`` only fresh architectures, ``surgery/`` only edits.

Example:
    >>> import tempfile, os, torch
    >>> from neurotomy.checkpoint import ModelMeta, save_checkpoint
    >>> from neurotomy.models import build_model
    >>> model = build_model("lenet5", 1, 10, 8)
    >>> meta = ModelMeta(arch="lenet5", arch_args={"in_channels": 1, "num_classes": 10, "input_size": 8})
    >>> path = save_checkpoint(model, meta, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
    >>> loaded = load_model(path)
    >>> bool(torch.equal(loaded(torch.ones(1, 1, 8, 8)), model.eval()(torch.ones(1, 1, 8, 8))))
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from neurotomy.checkpoint import ModelMeta, read_meta
from neurotomy.errors import CheckpointError, NeurotomyError
from neurotomy.loading.zoo import zoo_path
from neurotomy.models import build_model
from neurotomy.surgery.patching import PatchedModel
from neurotomy.surgery.recipe import replay_recipe

PATCHED = "patched"  # the architecture name of a weak model + a class module (surgery/patching.py)


def build_from_meta(meta: ModelMeta) -> nn.Module:
    """The architecture the metadata describes, recipe replayed, weights still random."""
    if meta.arch == PATCHED:
        return _build_patched(**meta.arch_args)
    model = build_model(meta.arch, **meta.arch_args)
    if meta.recipe:
        replay_recipe(model, meta.recipe, meta.input_shape)
    return model


def _build_patched(weak: dict, module: dict, target_class: int, **_shape) -> PatchedModel:
    """A saved patched model: both parts rebuilt from their own metadata."""
    weak_model = build_from_meta(ModelMeta.from_json(json.dumps(weak)))
    module_model = build_from_meta(ModelMeta.from_json(json.dumps(module)))
    return PatchedModel(weak_model, module_model, target_class)


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild and load a checkpoint; the model is in eval mode with ``neurotomy_meta`` set."""
    path = Path(path)
    meta = read_meta(path)
    try:
        model = build_from_meta(meta)
    except NeurotomyError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot rebuild architecture {meta.arch!r} ({exc})") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt weights ({exc}); the file is damaged, write it again") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit architecture {meta.arch!r} "
                              f"({first[1].strip() if len(first) > 1 else first[0]})") from None
    model.neurotomy_meta = meta
    return model.eval()


def load_model(spec: str | os.PathLike) -> nn.Module:
    """A checkpoint path or ``zoo:NAME`` → the model in eval mode, metadata in ``.neurotomy_meta``.

    Example:
        >>> model = load_model("zoo:lenet5-digits")
        >>> model.neurotomy_meta.arch, model.training
        ('lenet5', False)
    """
    spec = str(spec)
    if spec.startswith("zoo:"):
        return load_checkpoint(zoo_path(spec[4:]))
    return load_checkpoint(Path(spec))


__all__ = ["PATCHED", "build_from_meta", "load_checkpoint", "load_model"]
