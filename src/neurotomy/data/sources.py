"""Dataset sources: a :class:`~neurotomy.registry.Registry` of loaders, and :func:`load_dataset`.

A source registers its loader with :func:`dataset_source`, declaring what it takes and what is true
of its data:

- ``argument``: ``"PATH"`` or ``"NAME"`` when the source is written ``source:ARGUMENT``
  (``idx:DIR``, ``torchvision:CIFAR10``), None when it stands alone (``digits``);
- ``options``: the keyword options it accepts (``class_names``, ``input_size``); any in-memory
  source takes ``input_size`` too, its images resized after loading
  (:meth:`~neurotomy.data.tensor_dataset.TensorImageDataset.resized`);
- ``flip_safe``: whether a horizontally mirrored image keeps its label (clothing yes, digits no).
  Unknown data is not flip-safe unless its source knows better; training's ``augment="auto"``
  mirrors only flip-safe data.

A loader is called as ``loader(argument, root, split, **options)`` and returns an
:class:`~neurotomy.data.dataset.ImageDataset` whose ``name`` reloads it (paths made absolute).

Example:
    >>> dataset_specs()[:3]
    ['digits', 'fashion-mnist', 'idx:PATH']
    >>> DATASET_SOURCES.tags("fashion-mnist")["flip_safe"], DATASET_SOURCES.tags("digits")["flip_safe"]
    (True, False)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from torch.utils.data import Dataset

from neurotomy.errors import DataError
from neurotomy.registry import Registry

SPLITS = ("train", "test")
OPTIONS = ("class_names", "input_size")
"""Keyword options a source may accept: class names for its labels, a side length to resize to."""
ALIASES = {"fmnist": "fashion-mnist"}

DATASET_SOURCES: Registry = Registry("dataset", error=DataError,
                                     hint="(idx, image-folder and torchvision are written idx:PATH, "
                                          "image-folder:PATH, torchvision:NAME)")
"""Source name → ``loader(argument, root, split, **options)``, tagged ``argument``, ``options``,
``flip_safe`` and ``help``."""


def dataset_source(name: str, *, argument: str | None = None, options: Sequence[str] = (), flip_safe: bool = False,
                   help: str = "") -> Callable:
    """Decorator registering a loader as the dataset source ``name`` (see the module docstring)."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"dataset source {name!r}: unknown options {sorted(unknown)}")  # a programming error
    return DATASET_SOURCES.register(name, argument=argument, options=tuple(options), flip_safe=flip_safe, help=help)


def dataset_specs() -> list[str]:
    """How each source is written: ``digits``, ``idx:PATH``, ``torchvision:NAME`` …"""
    return [f"{n}:{DATASET_SOURCES.tags(n)['argument']}" if DATASET_SOURCES.tags(n)["argument"] else n
            for n in DATASET_SOURCES.names()]


def canonical_name(name: str) -> str:
    """``name`` as a loaded dataset spells it: aliases resolved, a PATH argument made absolute.

    Example:
        >>> canonical_name("fmnist"), canonical_name("idx:/data/../data/x")
        ('fashion-mnist', 'idx:/data/x')
    """
    source, colon, argument = name.strip().partition(":")
    source = ALIASES.get(source, source)
    if colon and source in DATASET_SOURCES and DATASET_SOURCES.tags(source)["argument"] == "PATH" and argument:
        argument = str(Path(argument).expanduser().resolve())
    return f"{source}{colon}{argument}"


def _check_distinct(names: list[str], where: str) -> list[str]:
    """``names`` unchanged, or an error naming the first that repeats: two classes called alike would
    be told apart by nothing in a report, a split or a per-class figure."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{where}class names repeat {name!r}; give distinct names")
        seen.add(name)
    return names


def parse_class_names(names: str | Sequence[str], what: str | None = None) -> list[str]:
    """``"a,b,c"`` or ``["a", "b", "c"]`` → ``["a", "b", "c"]``; an empty or repeated name is an error
    (prefixed by ``what``, the name the value goes by, as :mod:`neurotomy.validate`'s validators do).

    Example:
        >>> parse_class_names("cat, dog")
        ['cat', 'dog']
    """
    parts = names.split(",") if isinstance(names, str) else list(names)
    parts = [str(p).strip() for p in parts]
    if not parts or any(not p for p in parts):
        raise DataError(f"{what + ': ' if what else ''}class names {names!r}: give one non-empty name per class, "
                        "separated by commas")
    return _check_distinct(parts, f"{what}: " if what else "")


def resolve_class_names(count: int, given: Sequence[str] | None, listed: Path | None, where: str) -> list[str]:
    """Names of ``count`` classes: ``given`` (``class_names=``), else the lines of ``listed``
    (a ``classes.txt``, when it exists), else ``0 … count-1``. A list of the wrong length, or one that
    repeats a name, is an error."""
    names, origin = None, ""
    if given is not None:
        names, origin = parse_class_names(given), "class_names (--class-names)"
    elif listed is not None and listed.is_file():
        names = [line.strip() for line in listed.read_text(encoding="utf-8", errors="replace").splitlines()
                 if line.strip()]
        origin = str(listed)
        _check_distinct(names, f"{listed}: ")
    if names is None:
        return [str(c) for c in range(count)]
    if len(names) != count:
        raise DataError(f"{where}: {origin} names {len(names)} classes but the labels need {count}; "
                        f"give exactly one name per class (labels 0…{count - 1})")
    return names


def _check_options(source: str, options: dict) -> dict:
    accepted = DATASET_SOURCES.tags(source)["options"]
    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if key not in accepted and key != "input_size":  # in-memory data is resized after loading
            flag = "--" + key.replace("_", "-")
            takers = [s for s in dataset_specs() if key in DATASET_SOURCES.tags(s.split(":")[0])["options"]]
            raise DataError(f"{source} does not take {key} ({flag}); it applies to {', '.join(takers)}")
    if "input_size" in given:
        size = given["input_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise DataError(f"input size {size!r}: give a positive whole number of pixels")
    if "class_names" in given:
        given["class_names"] = parse_class_names(given["class_names"])
    return given


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", *,
                 class_names: str | Sequence[str] | None = None, input_size: int | None = None) -> Dataset:
    """Load one split of a dataset by name (see :func:`dataset_specs`); the result is an
    :class:`~neurotomy.data.dataset.ImageDataset`.

    ``root`` is the directory of a source's files where its name does not say it (``fashion-mnist``,
    ``torchvision:NAME``); ``class_names`` names the labels (IDX sets, folders, torchvision); and
    ``input_size`` resizes and centre-crops the images to that side length (any source).

    Example:
        >>> tuple(load_dataset("digits", split="test", input_size=16)[0][0].shape)
        (1, 16, 16)
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"dataset name {name!r}: give one of {', '.join(dataset_specs())}")
    source, colon, argument = name.strip().partition(":")
    source = ALIASES.get(source, source)
    loader = DATASET_SOURCES.get(source)
    takes = DATASET_SOURCES.tags(source)["argument"]
    if colon and not takes:
        raise DataError(f"{name}: {source} takes no ':{argument}'; write it as {source}")
    options = _check_options(source, {"class_names": class_names, "input_size": input_size})
    native = {k: v for k, v in options.items() if k in DATASET_SOURCES.tags(source)["options"]}
    data = loader(argument or None, Path(root).expanduser() if root else None, split, **native)
    if "input_size" in options and "input_size" not in native:
        data = data.resized(options["input_size"])
    return data


__all__ = ["ALIASES", "DATASET_SOURCES", "OPTIONS", "SPLITS", "canonical_name", "dataset_source", "dataset_specs", "load_dataset",
           "parse_class_names", "resolve_class_names"]
