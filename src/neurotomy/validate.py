"""Checking values at the door: one set of validators shared by the CLI and the public API.

Each validator takes a value and the name it goes by (``"epochs"`` in the API; ``None`` in the CLI,
where argparse already names the option), returns the value in its proper type (``int``, ``float``,
``Path``) and raises :class:`OptionError` saying what was expected and what was given. Text is
accepted wherever a number is (the CLI passes text, the API passes numbers) so both meet the very
same rule; the CLI wraps each validator into an argparse ``type=`` (``neurotomy.cli.common.Checked``),
so a bad value ends in one line and exit status 2 before any work starts.

Output paths are checked the same way *before* a job runs: the parent must be creatable (no file
in the way), the place writable, nothing that is not a file where a file goes.

Example:
    >>> positive_int("3"), fraction(0.25, "ratio"), positive_float("1e-3")
    (3, 0.25, 0.001)
    >>> positive_int(0, "epochs")
    Traceback (most recent call last):
    ...
    neurotomy.errors.OptionError: epochs: expected a positive integer (1, 2, …), got 0
    >>> fraction(float("nan"), "ratio", "(0, 1)")
    Traceback (most recent call last):
    ...
    neurotomy.errors.OptionError: ratio: expected a fraction in (0, 1), e.g. 0.5, got nan
"""

from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, Callable, Collection, Iterable

from neurotomy.errors import OptionError

INT_MAX = 2**63 - 1  # every count ends up in a torch int64 or a C long
SEED_MAX = 2**63 - 1
FRACTIONS = ("[0, 1)", "(0, 1)", "(0, 1]", "[0, 1]")
_INTEGER = re.compile(r"[+-]?[0-9]+")


def fail(name: str | None, message: str) -> OptionError:
    """The error for ``name`` (``None``: the CLI, where argparse prefixes the option)."""
    return OptionError(f"{name}: {message}" if name else message)


# ------------------------------------------------------------------------------------------------
# numbers

def _integer(value: Any, name: str | None, expected: str) -> int:
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER.fullmatch(text) or len(text) > 40:  # 40 digits exceed every maximum, without int()'s limit
            raise fail(name, f"expected {expected}, got {value!r}")
        return int(text)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise fail(name, f"expected {expected}, got {value!r}")
    return int(value)


def _real(value: Any, name: str | None, expected: str) -> float:
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise fail(name, f"expected {expected}, got {value!r}") from None
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, f"expected {expected}, got {value!r}")
    else:
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
    if not math.isfinite(number):
        raise fail(name, f"expected {expected}, got {value!r}")
    return number


def positive_int(value: Any, name: str | None = None, maximum: int = INT_MAX) -> int:
    """An integer ≥ 1 (and ≤ ``maximum``): epochs, batch sizes, image counts."""
    expected = "a positive integer (1, 2, …)" + (f" up to {maximum}" if maximum < INT_MAX else "")
    number = _integer(value, name, expected)
    if not 1 <= number <= maximum:
        raise fail(name, f"expected {expected}, got {value!r}")
    return number


def non_negative_int(value: Any, name: str | None = None, maximum: int = INT_MAX) -> int:
    """An integer ≥ 0 (and ≤ ``maximum``): optional epochs, worker processes, class indices."""
    expected = "an integer ≥ 0" + (f" up to {maximum}" if maximum < INT_MAX else "")
    number = _integer(value, name, expected)
    if not 0 <= number <= maximum:
        raise fail(name, f"expected {expected}, got {value!r}")
    return number


def int_between(value: Any, name: str | None = None, low: int = 0, high: int = INT_MAX) -> int:
    """An integer in ``[low, high]`` (an ONNX opset, a layer count)."""
    expected = f"an integer from {low} to {high}"
    number = _integer(value, name, expected)
    if not low <= number <= high:
        raise fail(name, f"expected {expected}, got {value!r}")
    return number


def seed(value: Any, name: str | None = None) -> int:
    """A random seed: an integer in [0, 2⁶³) (torch refuses larger ones; negative ones wrap)."""
    return non_negative_int(value, name, SEED_MAX)


def fraction(value: Any, name: str | None = None, interval: str = "[0, 1)") -> float:
    """A finite fraction in ``interval``: ``"[0, 1)"`` (share removed), ``"(0, 1)"``, ``"(0, 1]"``
    (share kept), ``"[0, 1]"``."""
    if interval not in FRACTIONS:
        raise ValueError(f"interval {interval!r} is not one of {FRACTIONS}")  # a programming error
    expected = f"a fraction in {interval}, e.g. 0.5"
    number = _real(value, name, expected)
    low_ok = number >= 0 if interval[0] == "[" else number > 0
    high_ok = number <= 1 if interval[-1] == "]" else number < 1
    if not (low_ok and high_ok):
        raise fail(name, f"expected {expected}, got {value!r}")
    return number


def positive_float(value: Any, name: str | None = None, maximum: float = math.inf) -> float:
    """A finite number > 0 (a learning rate, a temperature); NaN and infinity are refused."""
    expected = "a finite number > 0" + (f" up to {maximum:g}" if maximum < math.inf else "")
    number = _real(value, name, expected)
    if not 0 < number <= maximum:
        raise fail(name, f"expected {expected}, got {value!r}")
    return number


def non_negative_float(value: Any, name: str | None = None, maximum: float = math.inf) -> float:
    """A finite number ≥ 0 (a threshold factor, a weight decay)."""
    expected = "a finite number ≥ 0" + (f" up to {maximum:g}" if maximum < math.inf else "")
    number = _real(value, name, expected)
    if not 0 <= number <= maximum:
        raise fail(name, f"expected {expected}, got {value!r}")
    return number


# ------------------------------------------------------------------------------------------------
# names

def known_name(value: Any, name: str | None = None, *, names: Collection[str] | Callable[[], Collection[str]],
               kind: str = "name") -> str:
    """One of ``names`` (a list, a dict, a :class:`~neurotomy.registry.Registry`, or a function
    returning one, so a registry loads only when the value is checked)."""
    choices = names() if callable(names) else names
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(choices)
        raise fail(name, f"unknown {kind} {value!r}; use one of {listed}")
    return value


def known_names(value: Any, name: str | None = None, *, names: Collection[str] | Callable[[], Collection[str]],
                kind: str = "name") -> list[str]:
    """A comma-separated list (or a list) of ``names``, each known; at least one.

    Example:
        >>> known_names("a,b", names=["a", "b", "c"])
        ['a', 'b']
    """
    items = [v for v in value.split(",") if v] if isinstance(value, str) else list(value)
    if not items:
        raise fail(name, f"expected one or more {kind}s, got {value!r}")
    return [known_name(v, name, names=names, kind=kind) for v in items]


def identifier(value: Any, name: str | None = None, kind: str = "name") -> str:
    """A non-empty name without spaces or control characters (a layer name, checked later against
    the model it names)."""
    if not isinstance(value, str) or not value.strip() or any(c.isspace() or not c.isprintable() for c in value):
        raise fail(name, f"expected a {kind} (no spaces), got {value!r}")
    return value


def class_selection(value: Any, name: str | None = None) -> str:
    """``all`` or comma-separated class indices (``0,3,7``), returned as given; whether each index
    exists is for the model to say.

    Example:
        >>> class_selection("0,3,7"), class_selection("all")
        ('0,3,7', 'all')
    """
    if value == "all":
        return value
    items = value.split(",") if isinstance(value, str) else []
    if not items or not all(_INTEGER.fullmatch(i.strip()) and int(i) >= 0 and len(i) < 10 for i in items):
        raise fail(name, f"expected 'all' or class indices like 0,3,7, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------------
# paths

def _path(value: Any, name: str | None) -> Path:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise fail(name, f"expected a path, got {value!r}")
    if "\0" in value:
        raise fail(name, f"a path cannot contain a NUL byte, got {value!r}")
    return Path(value)


def _kind(path: Path, name: str | None) -> str | None:
    """``"dir"``, ``"file"`` (anything else that exists) or None (missing, or under a file); a path the
    system refuses to look at (a name too long, no permission) is the error it is."""
    try:
        return "dir" if path.stat().st_mode & 0o170000 == 0o040000 else "file"
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise fail(name, f"cannot use {str(path)[:80]!r}: {exc.strerror or exc}") from None


def existing_file(value: Any, name: str | None = None) -> Path:
    """A path to a file that exists."""
    path = _path(value, name)
    kind = _kind(path, name)
    if kind == "dir":
        raise fail(name, f"{str(path)!r} is a directory; give a file")
    if kind is None:
        raise fail(name, f"no such file: {str(path)!r}")
    return path


def existing_dir(value: Any, name: str | None = None) -> Path:
    """A path to a directory that exists."""
    path = _path(value, name)
    kind = _kind(path, name)
    if kind == "file":
        raise fail(name, f"{str(path)!r} is a file; give a directory")
    if kind is None:
        raise fail(name, f"no such directory: {str(path)!r}")
    return path


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _creatable(path: Path, name: str | None) -> None:
    """Every missing part of ``path`` can be made: no name is too long, and the nearest existing
    ancestor is a writable directory."""
    too_long = next((part for part in path.parts if len(os.fsencode(part)) > 255), None)
    missing: list[str] = []
    ancestor = path.absolute()
    while too_long is None and _kind(ancestor, name) is None and ancestor.parent != ancestor:
        missing.append(ancestor.name)
        ancestor = ancestor.parent
    longest = too_long or max(missing, key=len, default="")
    if too_long or len(os.fsencode(longest)) > _name_max(ancestor):
        raise fail(name, f"cannot create {str(path)[:80]!r}…: the name {longest[:40]!r}… is too long")
    if _kind(ancestor, name) != "dir":
        raise fail(name, f"cannot create {str(path)!r}: {str(ancestor)!r} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise fail(name, f"cannot write {str(path)!r}: no permission to write in {str(ancestor)!r}")


def output_file(value: Any, name: str | None = None, suffix: str | None = None) -> Path:
    """A file that can be written: an existing file (replaced) or a new one whose directory can be
    made. With ``suffix`` (``.safetensors``), the path a writer that appends it will use is checked.
    Returns the path as given."""
    path = _path(value, name)
    target = path if suffix is None or path.suffix == suffix else path.with_name(path.name + suffix)
    for place in dict.fromkeys([path, target]):  # "--out DIR" would write DIR.safetensors beside it: refuse
        if _kind(place, name) == "dir":
            raise fail(name, f"{str(place)!r} is a directory; give a file name (e.g. {str(place / 'out')!r})")
    if _kind(target, name) is None:
        _creatable(target, name)
    elif not os.access(target, os.W_OK) or not os.access(target.parent, os.W_OK | os.X_OK):
        raise fail(name, f"cannot replace {str(target)!r}: no permission")
    return path


def output_dir(value: Any, name: str | None = None) -> Path:
    """A directory to write into: an existing directory, or one that can be made."""
    path = _path(value, name)
    kind = _kind(path, name)
    if kind == "file":
        raise fail(name, f"{str(path)!r} is a file; give a directory to write into")
    if kind == "dir" and not os.access(path, os.W_OK | os.X_OK):
        raise fail(name, f"cannot write in {str(path)!r}: no permission")
    if kind is None:
        _creatable(path, name)
    return path


def each(values: Iterable[Any], validator: Callable[..., Any], name: str | None = None, **options: Any) -> list:
    """``validator`` applied to every value (a list option such as ``ks=[5, 10]``).

    Example:
        >>> each([5, "10"], positive_int, "ks")
        [5, 10]
    """
    return [validator(v, name, **options) for v in values]


__all__ = ["FRACTIONS", "INT_MAX", "class_selection", "each", "existing_dir", "existing_file", "fail", "fraction", "identifier",
           "int_between", "known_name", "known_names", "non_negative_float", "non_negative_int", "output_dir",
           "output_file", "positive_float", "positive_int", "seed"]
