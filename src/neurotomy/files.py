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


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Pretty JSON, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))
