"""Read and write the IDX format (LeCun's MNIST format, also used by Fashion-MNIST).

The layout is: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
one big-endian uint32 per dimension, then the data. Files may be gzip-compressed. Every way a file
can be wrong (missing, truncated, bad magic, wrong size) raises :class:`DataError` naming the file.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte.gz")
    >>> write_idx(path, np.arange(5, dtype=np.uint8))
    >>> read_idx(path).tolist()
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from neurotomy.errors import DataError

_UBYTE = 0x08


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip or plain) into a uint8 array of its declared shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check --root or NEUROTOMY_DATA") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}); check the file's permissions") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise DataError(f"{path}: corrupt or truncated gzip data; download the file again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number); point --root at the IDX files")
    if raw[2] != _UBYTE:
        raise DataError(f"{path}: IDX type code 0x{raw[2]:02x} is not supported; expected unsigned bytes (0x08)")
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DataError(f"{path}: truncated IDX header; download the file again")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    expected = int(np.prod(shape)) if ndim else 0
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
