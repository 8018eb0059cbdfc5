"""Weights from a file into a model: a state dict in safetensors, or a ``.pt``/``.pth`` state dict
read only with ``torch.load(weights_only=True)`` (which refuses pickled code, so a weights file
cannot run anything). Every mismatch is one line naming the first key that does not fit and both
shapes.

Example:
    >>> import tempfile, os, torch
    >>> from torch import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save(nn.Linear(3, 2).state_dict(), path)
    >>> model = nn.Linear(3, 2)
    >>> load_weights(model, path) is model
    True
    >>> load_weights(nn.Linear(4, 2), path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neurotomy.errors.CheckpointError: ...w.pt: weights do not fit the model: weight is 2×3 in the file but 2×4 in the model; check the architecture and --in-channels/--num-classes/--input-size
"""

from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from neurotomy.errors import CheckpointError

# keys under which training scripts commonly nest the state dict
_NESTED = ("state_dict", "model_state_dict", "model", "net", "weights")
# how a torch.save file starts: a zip archive (torch >= 1.6), or a pickle's protocol byte (the legacy format)
_TORCH_SAVE_HEADS = (b"PK\x03\x04", b"\x80")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal formatting some libraries put in their messages


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or of a ``torch.save``'d state dict (``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    with open(path, "rb") as fh:
        head = fh.read(9)
    if path.suffix == ".safetensors" or head[8:9] == b"{":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if not head.startswith(_TORCH_SAVE_HEADS):
        raise CheckpointError(f"{path}: not a weights file neurotomy can read (neither safetensors nor torch.save "
                              "output); give a state dict saved with torch.save(model.state_dict(), FILE) or "
                              "safetensors")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: torch.load(weights_only=True) refuses it ({_unpickler_reason(exc)}); it "
                              "holds pickled Python objects, not only tensors — in a trusted session save "
                              "model.state_dict() (torch.save or safetensors) and pass that") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable state dict ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
    return _tensors_of(state, path)


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """What the weights-only unpickler objected to (``Unsupported global: GLOBAL nets.Net …``), not
    torch's paragraph around it, without its terminal formatting."""
    text = _ANSI.sub("", str(exc))
    _, found, reason = text.partition("WeightsUnpickler error:")
    reason = " ".join((reason if found else text).split())
    return reason.split(". ")[0].rstrip(".")[:200] or type(exc).__name__


def _tensors_of(state, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        for key in _NESTED:
            inner = state.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                state = inner
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors; save "
                              "model.state_dict()")
    keys = list(state)
    if all(k.startswith("module.") for k in keys):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def first_mismatch(model: nn.Module, tensors: dict[str, torch.Tensor]) -> str | None:
    """The first difference between ``tensors`` and the model's state dict, in words; None if they fit."""
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in tensors:
            return f"{key} ({_shape(value)}) is missing from the file"
        if tuple(tensors[key].shape) != tuple(value.shape):
            return f"{key} is {_shape(tensors[key])} in the file but {_shape(value)} in the model"
    for key in tensors:
        if key not in expected:
            return f"the file has {key} ({_shape(tensors[key])}), which the model lacks"
    return None


def _shape(t: torch.Tensor) -> str:
    return "×".join(map(str, t.shape)) or "scalar"


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> nn.Module:
    """``model.load_state_dict(tensors)``, strictly, with the model's own state-dict metadata
    (module versions, which some torchvision models check: MNASNet) — a safetensors file keeps
    none — and a one-line error naming the first tensor that does not fit."""
    problem = first_mismatch(model, tensors)
    if problem is not None:
        raise CheckpointError(f"{source}: weights do not fit the model: {problem}; check the architecture and "
                              "--in-channels/--num-classes/--input-size")
    state = OrderedDict(tensors)
    state._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(state, strict=True)
    return model


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the state dict in ``path`` into ``model`` (in place; returns it)."""
    return load_state(model, read_state_dict(path), str(path))


__all__ = ["first_mismatch", "load_state", "load_weights", "read_state_dict"]
