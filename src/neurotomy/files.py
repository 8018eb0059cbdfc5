"""Writing files so that a crash never leaves half of one: temp file in the same directory, then
an atomic rename.

Example:
    >>> import tempfile, os, json
    >>> path = write_json(os.path.join(tempfile.mkdtemp(), "r.json"), {"a": 1})
    >>> json.loads(path.read_text())
    {'a': 1}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # temp files are created private; the result should not be
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float as ``None``: standard JSON has no NaN, and a browser's
    ``JSON.parse`` (or any strict reader) refuses the file Python would write with one.

    >>> finite_json({"rho": [0.5, float("nan")], "max": float("inf")})
    {'rho': [0.5, None], 'max': None}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Pretty, standard JSON (undefined numbers as ``null``: :func:`finite_json`), atomically."""
    text = json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))
