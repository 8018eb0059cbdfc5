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
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file
from torch import nn

from neurotomy.errors import CheckpointError
from neurotomy.files import atomic_write
from neurotomy.registry import Registry
from neurotomy.version import __version__

FORMAT_VERSION = 1
_META_KEY = "neurotomy"


@dataclass
class ModelMeta:
    """Everything about a model except its tensors; reachable as ``model.neurotomy_meta``."""

    arch: str
    arch_args: dict[str, Any]
    recipe: list[dict[str, Any]] = field(default_factory=list)
    dataset: str | None = None  # the name load_dataset reloads it by (idx:/abs/dir, image-folder:/abs/dir, digits)
    dataset_root: str | None = None  # absolute directory it was read from; None: built-in or shipped data
    dataset_options: dict[str, Any] = field(default_factory=dict)  # load_dataset options (class_names, input_size)
    normalization: dict[str, list[float]] | None = None
    classes: list[str] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    train_config: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def recorded_input_shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` of one input as ``arch_args`` records it; None when it records no
        ``in_channels`` or no ``input_size`` (a model described from its layers alone)."""
        a = self.arch_args
        if any(key not in a for key in SHAPE_KEYS):
            return None
        return (int(a["in_channels"]), int(a["input_size"]), int(a["input_size"]))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """:attr:`recorded_input_shape`, or a :class:`CheckpointError` that says how to give it:
        a size nobody recorded is never guessed (a 16 px model counted at 28 px is silently wrong)."""
        shape = self.recorded_input_shape
        if shape is None:
            raise CheckpointError(f"{self.arch} records no {missing_shape_text(self.arch_args)}; give "
                                  f"{missing_shape_options(self.arch_args)} to save_checkpoint or load_model")
        return shape

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


SHAPE_KEYS = ("in_channels", "input_size")
"""The ``arch_args`` that make a model's input shape; a checkpoint records both."""


_SHAPE_WORDS = {"in_channels": "input channels", "input_size": "input size"}


def missing_shape_text(arch_args: dict[str, Any]) -> str:
    """``input size``, ``input channels and input size``: what of the shape ``arch_args`` lacks."""
    return " and ".join(_SHAPE_WORDS[key] for key in SHAPE_KEYS if key not in arch_args)


def missing_shape_options(arch_args: dict[str, Any]) -> str:
    """``input_size=N``, ``in_channels=C, input_size=N``: the keywords that give what ``arch_args`` lacks."""
    values = {"in_channels": "C", "input_size": "N"}
    return ", ".join(f"{key}={values[key]}" for key in SHAPE_KEYS if key not in arch_args)


def with_input_shape(meta: ModelMeta, in_channels: int | None = None, input_size: int | None = None) -> ModelMeta:
    """``meta`` with the shape keys it lacks filled in from those given (a copy when any is); a
    given value that contradicts a recorded one is a :class:`CheckpointError`."""
    given = {k: v for k, v in (("in_channels", in_channels), ("input_size", input_size)) if v is not None}
    for key, value in given.items():
        if key in meta.arch_args and int(meta.arch_args[key]) != int(value):
            raise CheckpointError(f"{meta.arch} records {_SHAPE_WORDS[key]} {meta.arch_args[key]}, not {value}; "
                                  f"drop {key}= (the model knows its shape)")
    missing = {k: int(v) for k, v in given.items() if k not in meta.arch_args}
    return replace(meta, arch_args={**meta.arch_args, **missing}) if missing else meta


def library_versions() -> dict[str, str]:
    import torchvision

    return {"neurotomy": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


# How to rebuild a model that carries no metadata: ``neurotomy.models`` registers describers (a
# torchvision or timm model, a class defined in a file, …); the file format knows no architecture.
DESCRIBERS: Registry[Callable[[nn.Module], "ModelMeta | None"]] = Registry("model describer", CheckpointError)


def describe_model(model: nn.Module) -> ModelMeta:
    """``model.neurotomy_meta``, else the first description a describer gives, else an error
    that says how to make the model describable."""
    meta = getattr(model, "neurotomy_meta", None)
    if meta is not None:
        return meta
    for _, describe in DESCRIBERS.items():
        meta = describe(model)
        if meta is not None:
            return meta
    raise CheckpointError(
        f"cannot tell how to rebuild this {type(model).__name__}: build it with neurotomy.build_model (register its "
        "factory with neurotomy.register_model) or load it as neurotomy.load_model('path/to/file.py:factory'), or "
        "pass save_checkpoint(model, ModelMeta(arch=..., arch_args=...), path)")


def save_checkpoint(model: nn.Module, meta: ModelMeta | str | os.PathLike | None,
                    path: str | os.PathLike | None = None, *, in_channels: int | None = None,
                    input_size: int | None = None) -> Path:
    """Write weights and metadata atomically to ``path`` (``.safetensors`` is appended if missing).

    ``save_checkpoint(model, path)`` takes the metadata from the model (``neurotomy_meta``, or a
    description of how to rebuild it: registry name, ``torchvision:``/``timm:`` name or
    ``file.py:factory``, see :data:`DESCRIBERS`); ``save_checkpoint(model, meta, path)`` writes
    ``meta`` (``None``: as if not given). ``in_channels`` and ``input_size`` give the input shape
    when the metadata lacks it: a model built in a script records no input size, and taken from
    the model it must have one (an error says so), since every later count of MACs, export or
    check runs at that size.

    Example:
        >>> import tempfile, os
        >>> from torch import nn
        >>> from neurotomy.models.registry import rebuild_model
        >>> model = rebuild_model("lenet5", {"in_channels": 1, "num_classes": 10})  # no input size recorded
        >>> path = os.path.join(tempfile.mkdtemp(), "m")
        >>> save_checkpoint(model, path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        neurotomy.errors.CheckpointError: cannot tell the input size of this LeNet5 ...; pass ... input_size=N) ...
        >>> read_meta(save_checkpoint(model, path, input_size=28)).input_shape
        (1, 28, 28)
    """
    if path is None:
        if meta is None or isinstance(meta, ModelMeta):
            raise TypeError("save_checkpoint(model, path) or save_checkpoint(model, meta, path): no path given")
        meta, path = None, meta
    from_model = meta is None
    meta = with_input_shape(meta if meta is not None else describe_model(model), in_channels, input_size)
    if from_model and meta.recorded_input_shape is None:
        raise CheckpointError(f"cannot tell the {missing_shape_text(meta.arch_args)} of this {type(model).__name__} "
                              f"(its layers do not record it); pass save_checkpoint(model, path, "
                              f"{missing_shape_options(meta.arch_args)}) with the shape it takes")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    if not meta.versions:
        meta.versions = library_versions()
    tensors = _savable(model.state_dict())
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={_META_KEY: meta.to_json()}))
    return path


def _savable(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as safetensors accepts it: CPU tensors, contiguous, none sharing storage with another
    (tied weights, views). Only those that are not are cloned: cloning every tensor doubled the memory a
    save takes (+341 MB for ViT-B, at the peak of a prune)."""
    owners = Counter((v.device, v.untyped_storage().data_ptr()) for v in state.values())
    out = {}
    for key, value in state.items():
        shared = owners[value.device, value.untyped_storage().data_ptr()] > 1
        value = value.detach().cpu()
        out[key] = value.clone().contiguous() if shared or not value.is_contiguous() else value
    return out


MAX_HEADER = 100_000_000  # safetensors refuses larger headers too
MAX_INPUT_VALUES = 2**26  # C × H × W of one recorded input (64M values; 1024×1024 RGB is 3M)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "BOOL": (torch.bool, 1), "U8": (torch.uint8, 1), "I8": (torch.int8, 1), "I16": (torch.int16, 2),
    "I32": (torch.int32, 4), "I64": (torch.int64, 8), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "F32": (torch.float32, 4), "F64": (torch.float64, 8),
}
"""safetensors dtype names → (torch dtype, bytes per element), the ones a checkpoint may hold."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a checkpoint's table, checked against the file: where its bytes lie in the data
    region (``begin``…``end``), its dtype and shape."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def _check_header(path: Path, head: bytes, size: int) -> int:
    """Length of the JSON header, after making sure this is a safetensors file and not a pickle, and
    that the length fits the file (nothing is read or allocated from it before).

    A safetensors file is an 8-byte little-endian length followed by ``{``; checking that brace
    first matters, since a length's low byte can itself look like a pickle opcode (0x80).
    """
    if len(head) == 9 and head[8:9] == b"{":
        (length,) = struct.unpack("<Q", head[:8])
        if length > size - 8:
            raise CheckpointError(f"{path}: the header claims {length} bytes but the file has {size - 8} after "
                                  "its length; the file is truncated or corrupt, write it again")
        if length > MAX_HEADER:
            raise CheckpointError(f"{path}: a header of {length} bytes is larger than a checkpoint's can be "
                                  f"({MAX_HEADER}); the file is corrupt")
        return length
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise CheckpointError(
            f"{path}: this is a pickle/torch.save file, which neurotomy never loads (it can run code); "
            "re-save the weights with safetensors (neurotomy.save_checkpoint) from a trusted session"
        )
    if len(head) < 9:
        raise CheckpointError(f"{path}: file too short to be a checkpoint; it is truncated")
    raise CheckpointError(f"{path}: not a safetensors checkpoint (bad header); give a file written by neurotomy")


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """The checkpoint's JSON header as a dict, and the length of the data region after it; the
    length is checked against the file before the header is read, the JSON before it is used."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; give the .safetensors checkpoint file inside it")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(9)
            length = _check_header(path, head, size)
            raw = head[8:] + fh.read(length - 1)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint; check the path or use zoo:NAME "
                              "(see `neurotomy zoo`)") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from None
    if len(raw) != length:
        raise CheckpointError(f"{path}: the header is cut short; the file is truncated, write it again")
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: the header is not UTF-8 text; the file is corrupt") from None
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: the header is not valid JSON (or nests too deeply); the file is corrupt") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the header is not a JSON object; the file is corrupt")
    return header, size - 8 - length


def read_tensor_table(path: str | os.PathLike) -> dict[str, TensorEntry]:
    """Every tensor the header lists, each checked against the file: a known dtype, a shape whose
    bytes equal its span, spans inside the data region, back to back, covering it exactly (what
    safetensors requires) — so no tensor is read or allocated from a number the file cannot back."""
    path = Path(path)
    header, data_length = read_header(path)
    table: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        table[name] = _tensor_entry(path, name, entry, data_length)
    end = 0
    for name, entry in sorted(table.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != end:
            raise CheckpointError(f"{path}: tensor {name!r} starts at byte {entry.begin} of the data, expected {end} "
                                  "(tensors overlap or leave gaps); the file is corrupt")
        end = entry.end
    if end != data_length:
        raise CheckpointError(f"{path}: the tensors cover {end} bytes but the file holds {data_length}; "
                              "the file is truncated or corrupt, write it again")
    return table


def _tensor_entry(path: Path, name: str, entry: Any, data_length: int) -> TensorEntry:
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: tensor {name!r} has no dtype/shape/offsets record; the file is corrupt")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPES:
        raise CheckpointError(f"{path}: tensor {name!r} has dtype {str(dtype)[:20]!r}, which a checkpoint "
                              f"never holds ({', '.join(DTYPES)}); the file is corrupt")
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0
    if not (isinstance(shape, list) and len(shape) <= 8 and all(map(is_int, shape))):
        raise CheckpointError(f"{path}: tensor {name!r} has an impossible shape {str(shape)[:60]}; the file is corrupt")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_int, offsets))):
        raise CheckpointError(f"{path}: tensor {name!r} has malformed data offsets; the file is corrupt")
    begin, end = offsets
    if not begin <= end <= data_length:
        raise CheckpointError(f"{path}: tensor {name!r} claims bytes {begin}…{end} but the file holds {data_length}; "
                              "the file is truncated or corrupt, write it again")
    torch_dtype, itemsize = DTYPES[dtype]
    count = 1
    for d in shape:
        count *= d
    if count * itemsize != end - begin:
        raise CheckpointError(f"{path}: tensor {name!r} of shape {tuple(shape)} ({dtype}) needs {count * itemsize} "
                              f"bytes but spans {end - begin}; the file is corrupt")
    return TensorEntry(torch_dtype, tuple(shape), begin, end)


def table_mismatch(table: dict[str, TensorEntry], state: dict[str, torch.Tensor]) -> str | None:
    """The first way the checkpoint's tensors do not fit a model's state dict (names, shapes, a
    dtype of another kind: integers for floats), in words; None if they fit. ``state`` may live on
    the meta device: this compares shapes only, before any weight is allocated."""
    for key, value in state.items():
        entry = table.get(key)
        if entry is None:
            return f"{key} ({tuple(value.shape)}) is missing from the file"
        if entry.shape != tuple(value.shape):
            return f"{key} is {entry.shape} in the file but {tuple(value.shape)} in the model"
        if entry.dtype.is_floating_point != value.dtype.is_floating_point or (entry.dtype == torch.bool) != (value.dtype == torch.bool):
            return f"{key} is {entry.dtype} in the file but {value.dtype} in the model"
    extra = next((k for k in table if k not in state), None)
    return None if extra is None else f"the file has {extra} {table[extra].shape}, which the model lacks"


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """Read only the metadata header of a checkpoint (every field checked for its type)."""
    path = Path(path)
    header, _ = read_header(path)
    metadata = header.get("__metadata__")
    meta_json = metadata.get(_META_KEY) if isinstance(metadata, dict) else None
    if not isinstance(meta_json, str):
        raise CheckpointError(f"{path}: no neurotomy metadata in the header; it is corrupt or was not "
                              "written by neurotomy (a bare state dict: load it with --weights onto MODEL, "
                              "e.g. path/to/file.py:factory --weights FILE)")
    try:
        meta = ModelMeta.from_json(meta_json)
    except (ValueError, TypeError, AttributeError, RecursionError):
        raise CheckpointError(f"{path}: the neurotomy metadata is not a valid record; the file is corrupt") from None
    problem = meta_problem(meta)
    if problem:
        raise CheckpointError(f"{path}: {problem}; the file is corrupt")
    if meta.format_version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer neurotomy (format {meta.format_version}); upgrade")
    return meta


def meta_problem(meta: ModelMeta) -> str | None:
    """What is wrong with a metadata record's types and sizes (a lying header), in words, or None."""
    if not isinstance(meta.arch, str) or not meta.arch:
        return "the metadata names no architecture"
    if not isinstance(meta.arch_args, dict):
        return "the metadata's architecture arguments are not a JSON object"
    if not isinstance(meta.recipe, list) or not all(isinstance(step, dict) for step in meta.recipe):
        return "the metadata's surgery recipe is not a list of steps"
    if isinstance(meta.format_version, bool) or not isinstance(meta.format_version, int):
        return "the metadata's format version is not a number"
    shape = {k: meta.arch_args.get(k) for k in ("in_channels", "input_size", "num_classes") if k in meta.arch_args}
    for key, value in shape.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**20):
            return f"the metadata's {key} is {str(value)[:30]}, not a plausible size"
    c, h, w = (shape.get("in_channels") or 1), (shape.get("input_size") or 1), (shape.get("input_size") or 1)
    if c * h * w > MAX_INPUT_VALUES:
        return f"the metadata's input shape {c}×{h}×{w} is larger than any model neurotomy loads"
    return None
