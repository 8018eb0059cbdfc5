"""Read and write the IDX format (LeCun's MNIST format, also used by Fashion-MNIST).

The layout is: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
one big-endian uint32 per dimension, then the data. Files may be gzip-compressed. Every way a file
can be wrong (missing, truncated, bad magic, wrong size) raises :class:`DataError` naming the file.

A split of an IDX set is a pair of files, ``{train,t10k,test}-images-idx3-ubyte[.gz]`` and
``…-labels-idx1-ubyte[.gz]``: :func:`find_idx_file` finds them, :func:`read_idx_split` reads and
checks them, :func:`images01` turns the images into a float tensor.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte.gz")
    >>> write_idx(path, np.arange(5, dtype=np.uint8))
    >>> read_idx(path).tolist()
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from neurotomy.errors import DataError

_UBYTE = 0x08
PREFIXES = {"train": ("train",), "test": ("t10k", "test")}
"""File-name prefixes of each split: ``train-…``; ``t10k-…`` (MNIST's) or ``test-…``."""


def read_idx(path: str | os.PathLike, *, where: str = "the path") -> np.ndarray:
    """Read one IDX file (gzip or plain) into a uint8 array of its declared shape.

    ``where`` is how the user named the file's directory (``--root or NEUROTOMY_DATA`` for a preset,
    ``idx:DIR`` for an IDX set): a missing or foreign file tells them to check what they gave."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check {where}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}); check the file's permissions") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise DataError(f"{path}: corrupt or truncated gzip data; download the file again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number); check {where}, or replace the file with an "
                        "IDX file")
    if raw[2] != _UBYTE:
        raise DataError(f"{path}: IDX type code 0x{raw[2]:02x} is not supported; expected unsigned bytes (0x08)")
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DataError(f"{path}: truncated IDX header; download the file again")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    expected = math.prod(shape) if ndim else 0  # Python ints: np.prod wraps past 2**64, passing a corrupt header
    payload = len(raw) - header_end
    if payload != expected:
        raise DataError(
            f"{path}: header declares shape {tuple(shape)} ({expected} bytes) but the file holds "
            f"{payload}; the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as IDX, gzip-compressed when the name ends in ``.gz``; atomic."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"IDX writer: array dtype {array.dtype} unsupported; convert to uint8 first")
    header = bytes([0, 0, _UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def find_idx_file(directory: Path, split: str, kind: str) -> Path | None:
    """The ``kind`` (``images`` or ``labels``) file of ``split`` in ``directory``, or None."""
    ndims = "[34]" if kind == "images" else "1"
    prefixes = "|".join(PREFIXES[split])
    pattern = re.compile(rf"(^|.*[-_.])({prefixes})[-_.]{kind}[-_.]idx{ndims}[-_.]ubyte(\.gz)?$")
    found = sorted(p for p in directory.iterdir() if p.is_file() and pattern.match(p.name))
    if len(found) > 1:
        raise DataError(f"{directory}: several {split} {kind} files ({', '.join(p.name for p in found)}); "
                        "keep one per split in the directory")
    return found[0] if found else None


def read_idx_images(path: Path, *, where: str = "the path") -> np.ndarray:
    """An IDX file of images, (N, H, W) or (N, H, W, C) with 1 or 3 channels (``where`` as for :func:`read_idx`)."""
    images = read_idx(path, where=where)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise DataError(f"{path}: expected N×H×W (or N×H×W×C colour) images, found shape {images.shape}")
    return images


def read_idx_split(images_path: Path, labels_path: Path, *,
                   where: str = "the path") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) or (N, H, W, C) and labels (N,) of one split, checked to belong together
    (``where`` as for :func:`read_idx`)."""
    images, labels = read_idx_images(images_path, where=where), read_idx(labels_path, where=where)
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected a 1-d label array, found shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "the two files do not belong together"
        )
    return images, labels


def images01(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W[, C]) → float (N, C, H, W) in [0, 1]."""
    x = torch.from_numpy(images).float() / 255.0
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
