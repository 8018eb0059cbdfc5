"""A checkpoint file → a working model: build the architecture it names, replay its surgery
recipe, load the weights.

Example:
    >>> import tempfile, os, torch
    >>> from neurotomy.checkpoint import save_checkpoint
    >>> from neurotomy.models import build_model
    >>> model = build_model("lenet5", 1, 10, 8)
    >>> path = save_checkpoint(model, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
    >>> loaded = load_checkpoint(path)
    >>> bool(torch.equal(loaded(torch.ones(1, 1, 8, 8)), model.eval()(torch.ones(1, 1, 8, 8))))
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
import torch
from torch import nn

from neurotomy.checkpoint import (ModelMeta, missing_shape_options, missing_shape_text, read_meta, read_tensor_table,
                                 table_mismatch, with_input_shape)
from neurotomy.errors import CheckpointError, NeurotomyError, PruningError
from neurotomy.loading.weights import first_mismatch, load_state
from neurotomy.models import rebuild_model
from neurotomy.surgery.patching import PatchedModel
from neurotomy.surgery.recipe import replay_recipe

PATCHED = "patched"  # the architecture name of a weak model + a class module (surgery/patching.py)


def build_from_meta(meta: ModelMeta) -> nn.Module:
    """The architecture the metadata describes, recipe replayed, weights still random."""
    if meta.arch == PATCHED:
        return _build_patched(**meta.arch_args)
    model = rebuild_model(meta.arch, meta.arch_args)
    if meta.recipe:
        replay_recipe(model, meta.recipe, meta.input_shape)
    return model


def _build_patched(weak: dict, module: dict, target_class: int, **_shape) -> PatchedModel:
    """A saved patched model: both parts rebuilt from their own metadata."""
    weak_model = build_from_meta(ModelMeta.from_json(json.dumps(weak)))
    module_model = build_from_meta(ModelMeta.from_json(json.dumps(module)))
    return PatchedModel(weak_model, module_model, target_class)


def _with_input_shape(meta: ModelMeta, path: Path, in_channels: int | None, input_size: int | None) -> ModelMeta:
    """``meta`` with the shape it lacks taken from the caller, who alone knows it; a shape the
    header records is kept (``input_size`` then only resizes the data, see ``resolve_model``)."""
    missing = {k: v for k, v in (("in_channels", in_channels), ("input_size", input_size)) if k not in meta.arch_args}
    meta = with_input_shape(meta, **missing)
    if meta.recorded_input_shape is None:
        options = missing_shape_options(meta.arch_args)
        flags = " ".join(f"--{option.replace('_', '-').replace('=', ' ')}" for option in options.split(", "))
        raise CheckpointError(f"{path}: records no {missing_shape_text(meta.arch_args)}; load it with "
                              f"load_model(path, {options}) (on the command line {flags}), the shape it was trained on")
    return meta


def _check_against_file(meta: ModelMeta, table: dict, path: Path) -> None:
    """Build the architecture on the meta device (shapes, no memory) and compare it with the file's
    tensor table, so a header whose arguments lie (a width of 10⁹) fails before anything is allocated."""
    try:
        with torch.device("meta"):
            skeleton = build_from_meta(meta)
    except PruningError:  # a recipe torch-pruning cannot replay on the meta device (it indexes real tensors)
        return
    except NeurotomyError:
        raise
    except Exception:  # an architecture that needs real tensors to build: the real build checks it
        return
    problem = table_mismatch(table, skeleton.state_dict())
    if problem is not None:
        raise CheckpointError(f"{path}: weights do not fit architecture {meta.arch!r} ({problem}); the file is corrupt "
                              "or was written for another architecture")


def load_checkpoint(path: str | os.PathLike, *, in_channels: int | None = None,
                    input_size: int | None = None) -> nn.Module:
    """Rebuild and load a checkpoint; the model is in eval mode with ``neurotomy_meta`` set.
    ``in_channels`` and ``input_size`` complete a header that records no input shape (a model
    described from its layers, saved before this was checked); they are never guessed."""
    path = Path(path)
    meta = _with_input_shape(read_meta(path), path, in_channels, input_size)
    _check_against_file(meta, read_tensor_table(path), path)
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
    problem = first_mismatch(model, tensors)
    if problem is not None:
        raise CheckpointError(f"{path}: weights do not fit architecture {meta.arch!r} ({problem})")
    load_state(model, tensors, str(path))
    model.neurotomy_meta = meta
    return model.eval()


__all__ = ["PATCHED", "build_from_meta", "load_checkpoint"]
