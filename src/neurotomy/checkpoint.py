"""Checkpoints without pickle: one ``.safetensors`` file, weights plus a JSON metadata header.

safetensors keeps a string-to-string metadata map in its header; we store one key, ``neurotomy``,
holding JSON: architecture name and arguments, the surgery recipe (the structural edits that turn
the freshly built architecture into this one), dataset, normalisation, metrics, seed and library
versions. Loading (:mod:`neurotomy.loading`) rebuilds the architecture, replays the recipe, then loads the tensors — no code
or objects are ever deserialised. Pickle files (``torch.save``) are refused with a clear message.
Writes go to a temporary file that is renamed into place, so a crash never leaves half a file.

Example:
    >>> import tempfile, os, torch
    >>> from neurotomy.models import build_model
    >>> model = build_model("lenet5", 1, 10, 8)
    >>> meta = ModelMeta(arch="lenet5", arch_args={"in_channels": 1, "num_classes": 10, "input_size": 8})
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> _ = save_checkpoint(model, meta, path)
    >>> read_meta(path).arch, read_meta(path).input_shape
    ('lenet5', (1, 8, 8))
"""

from __future__ import annotations

import json
import os
import platform
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from neurotomy.errors import CheckpointError
from neurotomy.files import atomic_write
from neurotomy.version import __version__

FORMAT_VERSION = 1
_META_KEY = "neurotomy"


@dataclass
class ModelMeta:
    """Everything about a model except its tensors; reachable as ``model.neurotomy_meta``."""

    arch: str
    arch_args: dict[str, Any]
    recipe: list[dict[str, Any]] = field(default_factory=list)
    dataset: str | None = None
    normalization: dict[str, list[float]] | None = None
    classes: list[str] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    train_config: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def input_shape(self) -> tuple[int, int, int]:
        a = self.arch_args
        size = int(a.get("input_size", 28))
        return (int(a.get("in_channels", 1)), size, size)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def library_versions() -> dict[str, str]:
    import torchvision

    return {"neurotomy": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def save_checkpoint(model: nn.Module, meta: ModelMeta, path: str | os.PathLike) -> Path:
    """Write weights and metadata atomically to ``path`` (``.safetensors`` is appended if missing)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    if not meta.versions:
        meta.versions = library_versions()
    # contiguous clones: safetensors refuses shared or strided storage
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={_META_KEY: meta.to_json()}))
    return path


def _check_header(path: Path, head: bytes) -> int:
    """Length of the JSON header, after making sure this is a safetensors file and not a pickle.

    A safetensors file is an 8-byte little-endian length followed by ``{``; checking that brace
    first matters, since a length's low byte can itself look like a pickle opcode (0x80).
    """
    if len(head) == 9 and head[8:9] == b"{":
        (length,) = struct.unpack("<Q", head[:8])
        if length <= 100_000_000:
            return length
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(
            f"{path}: this is a pickle/torch.save file, which neurotomy never loads (it can run code); "
            "re-save the weights with safetensors (neurotomy.save_checkpoint) from a trusted session"
        )
    if len(head) < 9:
        raise CheckpointError(f"{path}: file too short to be a checkpoint; it is truncated")
    raise CheckpointError(f"{path}: not a safetensors checkpoint (bad header); give a file written by neurotomy")


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """Read only the metadata header of a checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; give the .safetensors checkpoint file inside it")
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            length = _check_header(path, head)
            header = head[8:] + fh.read(length - 1)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint; check the path or use zoo:NAME "
                              "(see `neurotomy zoo`)") from None
    try:
        meta_json = json.loads(header)["__metadata__"][_META_KEY]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: no neurotomy metadata in the header; it is corrupt or was not "
                              "written by neurotomy") from None
    meta = ModelMeta.from_json(meta_json)
    if meta.format_version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer neurotomy (format {meta.format_version}); upgrade")
    return meta
