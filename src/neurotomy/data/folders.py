"""Images from disk: ``image-folder:PATH`` (one sub-folder per class) and ``torchvision:NAME``
(a torchvision dataset already on this machine — neurotomy never downloads).

Both read images on demand (:class:`~neurotomy.data.file_dataset.FileImageDataset`) and decide
once, from the training split, what every image becomes:

- **colour**: grey (1 channel) when every sampled image is single-channel, else RGB (3);
- **size**: ``input_size=N`` resizes the short side to N and centre-crops N×N; without it every
  sampled image must already have the same size;
- **normalisation**: per-channel mean and std measured on at most :data:`NORMALIZATION_SAMPLE`
  training images, evenly spaced (every class of a sorted folder is in the sample).

``image-folder:PATH`` uses ``PATH/train`` and ``PATH/test`` when ``PATH/train`` exists; the class list
is the training folder's, so a test folder missing a class keeps the same label numbers, and a test
class folder the training folder lacks is left out with a warning. A flat ``PATH`` (class folders only)
holds out :data:`FLAT_TEST_FRACTION` of each class, drawn with the fixed :data:`FLAT_SPLIT_SEED`, as
its test split (said in one warning line): every command, and every later run on a model trained
there, sees the same split, and the normalisation is measured on the training part only. Nothing is
known of the images, so flips are not declared label-safe.

A folder is taken as users keep it (:func:`_scan`): every format Pillow decodes is an image (GIFs too);
hidden files and folders (``.DS_Store``, macOS's ``._*``, ``.ipynb_checkpoints``) are skipped; a symlink
is followed, but each folder is read once, so a loop adds nothing; each of these is said in one warning
line. Every image file's header (mode and size, no pixels: about 2.5 s for 60,000 small PNGs, extrapolated
from 10,000) is read before any work, so a corrupt file or an image of another size — in train/ or in
test/ — is a one-line :class:`~neurotomy.errors.DataError` before training, never a traceback after it.

``torchvision:NAME`` reads ``root`` (default ``~/.cache/neurotomy/NAME``); flips are label-safe for
the natural-image datasets in :data:`FLIP_SAFE_TORCHVISION`, not for digits or letters.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from neurotomy.data.batches import iterate_batches
from neurotomy.data.file_dataset import (GRAYSCALE_MODES, FileImageDataset, PilFiles, PilFromDataset, PilPixels,
                                         image_header)
from neurotomy.data.sources import dataset_source, resolve_class_names
from neurotomy.data.subsets import held_out_indices
from neurotomy.data.tensor_dataset import Normalization, measure_normalization
from neurotomy.errors import DataError, NeurotomyWarning

NORMALIZATION_SAMPLE = 2000
"""Training images the normalisation of data read from disk is measured on (evenly spaced)."""
LAYOUT_SAMPLE = 256
"""Images of a torchvision dataset whose colour mode and size are inspected to decide the colour and check
the size (an image folder's files are all checked, from their headers)."""
UNDECODED_FORMATS = frozenset({"BUFR", "GRIB", "HDF5", "WMF", "EPS", "MPEG", "IPTC"})
"""Pillow formats it identifies but cannot decode by itself (stubs, Ghostscript, Windows only): not images here."""
OTHER_IMAGE_EXTENSIONS = frozenset({".heic", ".heif", ".avif", ".jxl", ".svg", ".pdf"})
"""Extensions of image formats Pillow may lack, named in a warning when a folder holds them."""
FLIP_SAFE_TORCHVISION = frozenset({
    "CIFAR10", "CIFAR100", "FashionMNIST", "STL10", "ImageNet", "Imagenette", "Food101", "Flowers102",
    "OxfordIIITPet", "Caltech101", "Caltech256", "FGVCAircraft", "StanfordCars", "DTD", "EuroSAT", "Country211",
})
"""torchvision datasets whose labels survive a horizontal mirror (natural images, clothing)."""
FLAT_TEST_FRACTION = 0.2
"""Share of each class that a flat image folder (no train/ and test/ folders) holds out for testing."""
FLAT_SPLIT_SEED = 0
"""Seed of that draw: fixed, not ``--seed``, so a later command never tests a model on its training images."""


def _evenly_spaced(n: int, count: int) -> torch.Tensor:
    return torch.linspace(0, n - 1, min(n, count)).round().long().unique()


def _layout(source, where: str, input_size: int | None) -> tuple[str, tuple[int, int] | None]:
    """Colour mode (``"L"``/``"RGB"``) for the source's images, and their common size (W, H) when
    ``input_size`` is None (an error when they differ)."""
    modes, sizes = set(), set()
    for i in _evenly_spaced(len(source), LAYOUT_SAMPLE).tolist():
        image = source.pil(i)
        modes.add(image.mode)
        sizes.add(image.size)
    if input_size is None and len(sizes) > 1:
        shown = ", ".join(f"{w}×{h}" for w, h in sorted(sizes)[:3])
        raise DataError(f"{where}: images differ in size ({shown}…); pass --input-size N (input_size=N) to resize "
                        "and centre-crop them to N×N")
    return ("L" if modes <= GRAYSCALE_MODES else "RGB"), (next(iter(sizes)) if len(sizes) == 1 else None)


def _measured(pixels: PilPixels) -> Normalization:
    """Normalisation measured on an evenly spaced sample of ``pixels`` (images in [0, 1])."""
    channels = 1 if pixels.mode == "L" else 3
    raw = FileImageDataset(pixels, torch.zeros(len(pixels), dtype=torch.long), [], Normalization.identity(channels))
    sample = raw.subset(_evenly_spaced(len(pixels), NORMALIZATION_SAMPLE))
    return measure_normalization(images for images, _ in iterate_batches(sample, 64))


# ---------------------------------------------------------------- image folders

@lru_cache(maxsize=1)
def _extensions() -> tuple[frozenset[str], frozenset[str]]:
    """(images, image-like): the lower-case extensions read as images — every format Pillow opens and decodes by
    itself, torchvision's ``IMG_EXTENSIONS`` among them — and every extension of an image format, so that files
    left out for their format can be counted in a warning rather than vanish."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS

    Image.init()
    registered = Image.registered_extensions()
    images = {ext for ext, fmt in registered.items() if fmt in Image.OPEN and fmt not in UNDECODED_FORMATS}
    return frozenset(images | set(IMG_EXTENSIONS)), frozenset(set(registered) | OTHER_IMAGE_EXTENSIONS)


def _extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()


@dataclass
class _Scan:
    """What a walk of an image folder found: the image files of each class folder (in the order torchvision's
    ``make_dataset`` gives them: by folder path, then name, so flat splits drawn before stay the same) and what
    it left out, for the warnings of :func:`_warn_left_out`."""

    folder: Path
    images: dict[str, list[str]] = field(default_factory=dict)
    hidden_folders: dict[str, int] = field(default_factory=dict)  # relative path → image files in it
    hidden_files: int = 0  # hidden files with an image extension
    unread: Counter = field(default_factory=Counter)  # extension → files in formats not read
    repeated: list[str] = field(default_factory=list)  # "a/loop → a": symlinked folders already read


def _entries(directory: str) -> list[os.DirEntry]:
    """The entries of ``directory`` by name; a folder that cannot be listed is an error, not an empty class."""
    try:
        with os.scandir(directory) as listing:
            return sorted(listing, key=lambda entry: entry.name)
    except OSError as exc:
        raise DataError(f"{directory}: cannot read the folder ({exc.strerror or type(exc).__name__}); make it "
                        "readable, or remove it") from None


def _scan(folder: Path) -> _Scan:
    """Every class folder of ``folder`` (its sub-folders not starting with '.') with its image files."""
    scan = _Scan(folder)
    for entry in _entries(str(folder)):
        if entry.is_dir():
            if entry.name.startswith("."):
                _note_hidden_folder(scan, entry.path)
            else:
                scan.images[entry.name] = _class_images(scan, entry.path)
    return scan


def _class_images(scan: _Scan, class_dir: str) -> list[str]:
    """The image files under ``class_dir``, symlinks followed, each real folder and file read once (a loop
    such as ``a/loop -> a`` would otherwise repeat the class until the system's link limit)."""
    images, image_like = _extensions()
    known = images | image_like
    visited = {os.path.realpath(scan.folder): str(scan.folder)}  # real path → the path it was read by (a link
    # up to the folder itself would read every class into this one)
    seen: set[str] = set()
    found: list[tuple[str, list[str]]] = []
    stack = [class_dir]
    while stack:
        directory = stack.pop()
        real = os.path.realpath(directory)
        if real in visited:
            scan.repeated.append(f"{os.path.relpath(directory, scan.folder)} → "
                                 f"{os.path.relpath(visited[real], scan.folder)}")
            continue
        visited[real] = directory
        names, below = [], []
        for entry in _entries(directory):
            if entry.name.startswith("."):
                if entry.is_dir():
                    _note_hidden_folder(scan, entry.path)
                elif _extension(entry.name) in known:
                    scan.hidden_files += 1
            elif entry.is_dir():
                below.append(entry.path)
            elif entry.is_file():
                ext = _extension(entry.name)
                identity = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real, entry.name)
                if ext in images and identity not in seen:
                    seen.add(identity)
                    names.append(entry.name)
                elif ext in image_like and ext not in images:
                    scan.unread[ext] += 1
        found.append((directory, names))
        stack.extend(reversed(below))  # depth first in name order: the first path to a folder reads it
    return [os.path.join(directory, name) for directory, names in sorted(found) for name in names]


def _note_hidden_folder(scan: _Scan, path: str) -> None:
    """Count the image files under a hidden folder (not followed into links), for the warning."""
    known = frozenset().union(*_extensions())
    count = sum(1 for _, _, files in os.walk(path) for name in files if _extension(name) in known)
    if count:
        scan.hidden_folders[os.path.relpath(path, scan.folder)] = count


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _warn_left_out(scan: _Scan) -> None:
    """One warning line per kind of thing :func:`_scan` left out that a user may have meant as data."""
    where = scan.folder
    if scan.hidden_folders:
        shown = ", ".join(f"{name} ({_plural(n, 'image')})" for name, n in sorted(scan.hidden_folders.items()))
        warnings.warn(f"{where}: skipped hidden folders (names starting with '.'): {shown}; they are not classes — "
                      "rename a folder without the '.' to use its images", NeurotomyWarning)
    if scan.hidden_files:
        warnings.warn(f"{where}: skipped {_plural(scan.hidden_files, 'hidden file')} with image extensions (names "
                      "starting with '.', such as macOS's ._* metadata files)", NeurotomyWarning)
    if scan.unread:
        count = sum(scan.unread.values())
        shown = ", ".join(sorted(scan.unread))
        warnings.warn(f"{where}: left out {_plural(count, 'file')} in a format neurotomy cannot read ({shown}); "
                      f"convert {'it' if count == 1 else 'them'} to PNG", NeurotomyWarning)
    if scan.repeated:
        warnings.warn(f"{where}: skipped symlinked folders that lead to a folder already read "
                      f"({', '.join(scan.repeated[:5])}{', …' if len(scan.repeated) > 5 else ''}); each image is "
                      "read once", NeurotomyWarning)


def _samples(scan: _Scan, classes: tuple[str, ...]) -> list[tuple[str, int]]:
    """(path, label) of every image of the ``classes`` in ``scan``, sorted by class then path."""
    return [(path, label) for label, name in enumerate(classes) for path in scan.images.get(name, [])]


def _headers(paths: list[str]) -> tuple[set[str], dict[tuple[int, int], list[str]]]:
    """Colour modes of the image files at ``paths``, and their paths by size (W, H), from the headers only."""
    modes: set[str] = set()
    sizes: dict[tuple[int, int], list[str]] = {}
    for path in paths:
        mode, size = image_header(path)
        modes.add(mode)
        sizes.setdefault(size, []).append(path)
    return modes, sizes


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def _common_size(where: Path, sizes: dict[tuple[int, int], list[str]]) -> tuple[int, int]:
    """The one size of a folder's images; more than one is an error naming the sizes and an odd file."""
    if len(sizes) == 1:
        return next(iter(sizes))
    ranked = sorted(sizes.items(), key=lambda item: (-len(item[1]), item[0]))
    shown = ", ".join(f"{_size(size)}: {_plural(len(paths), 'image')}" for size, paths in ranked[:3])
    raise DataError(f"{where}: images differ in size ({shown}{', …' if len(ranked) > 3 else ''}, e.g. "
                    f"{ranked[1][1][0]}); pass --input-size N (input_size=N) to resize and centre-crop them to N×N")


def _check_test_sizes(folder: Path, sizes: dict[tuple[int, int], list[str]], train_size: tuple[int, int]) -> None:
    """Test images must have the training images' size (unless ``input_size`` resizes both)."""
    odd = [(size, paths) for size, paths in sorted(sizes.items(), key=lambda item: -len(item[1]))
           if size != train_size]
    if odd:
        size, paths = odd[0]
        total = sum(len(p) for p in sizes.values())
        raise DataError(f"{folder}: test images are {_size(size)} ({len(paths)} of {total}, e.g. {paths[0]}) but the "
                        f"training images are {_size(train_size)}; pass --input-size N (input_size=N) to resize "
                        "and centre-crop both to N×N")


def _flat_split(samples: list[tuple[str, int]], split: str) -> list[tuple[str, int]]:
    """The ``split`` part of a flat folder's images: the held-out draw for test, the rest for train."""
    held_out = set(held_out_indices(torch.tensor([t for _, t in samples]), FLAT_TEST_FRACTION,
                                    FLAT_SPLIT_SEED).tolist())
    return [sample for i, sample in enumerate(samples) if (i in held_out) == (split == "test")]


@dataclass(frozen=True)
class _Reference:
    """What a training folder decides for every split: classes, colour mode, size (when not resized) and
    normalisation, with its images (a flat folder's: all of them, both splits)."""

    classes: tuple[str, ...]
    mode: str
    size: tuple[int, int] | None
    normalization: Normalization
    samples: tuple[tuple[str, int], ...]


@lru_cache(maxsize=16)
def _folder_reference(reference: str, input_size: int | None, flat: bool) -> _Reference:
    """Class names, colour mode, image size and normalisation of a training folder (measured once per process;
    of a flat folder, on its training part). Every image's header is read here, before any work: a class
    without images, a corrupt file or an odd size is a one-line error now, not after an epoch."""
    folder = Path(reference)
    scan = _scan(folder)
    _warn_left_out(scan)
    classes = tuple(scan.images)
    if not classes:
        raise DataError(f"{reference}: not an image folder (no class folders in it); use one sub-folder of images "
                        "per class")
    empty = [name for name in classes if not scan.images[name]]
    if len(empty) == len(classes):
        raise DataError(f"{reference}: no images in its class folders ({', '.join(classes)}); add images "
                        "(.png, .jpg, …) to them")
    if empty:
        raise DataError(f"{reference}: class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)} "
                        f"ha{'ve' if len(empty) > 1 else 's'} no images (.png, .jpg, …); add images or remove the "
                        f"folder{'s' if len(empty) > 1 else ''}")
    samples = _samples(scan, classes)
    modes, sizes = _headers([path for path, _ in samples])
    size = _common_size(folder, sizes) if input_size is None else None
    mode = "L" if modes <= GRAYSCALE_MODES else "RGB"
    training = _flat_split(samples, "train") if flat else samples
    normalization = _measured(PilPixels(PilFiles([path for path, _ in training], size), mode, input_size))
    return _Reference(classes, mode, size, normalization, tuple(samples))


def _warn_held_out(path: Path, samples: list[tuple[str, int]]) -> None:
    """One warning line: a flat folder's test split is a held-out part of its images (:func:`_flat_split`)."""
    held_out = len(_flat_split(samples, "test"))
    warnings.warn(f"{path} has no train/ and test/ folders: {held_out} of its {len(samples)} images "
                  f"({FLAT_TEST_FRACTION:.0%} of each class, fixed seed {FLAT_SPLIT_SEED}) are held out as its test "
                  "split, the rest train", NeurotomyWarning)


def _warn_unknown_test_classes(folder: Path, classes: tuple[str, ...], scan: _Scan) -> None:
    """One warning line naming the class folders of ``folder`` (a test split) that training lacks, with
    their image counts: their images are left out, and a misnamed folder should not pass unnoticed."""
    counts = {name: len(paths) for name, paths in scan.images.items() if name not in classes and paths}
    if counts:
        shown = ", ".join(f"{name!r} ({n} image{'s' if n != 1 else ''})" for name, n in counts.items())
        warnings.warn(f"{folder}: test class folders not in {folder.parent / 'train'} are left out: {shown}; give "
                      "them training folders of the same names, or rename them to a training class",
                      NeurotomyWarning)


def _warn_untested_classes(folder: Path, classes: tuple[str, ...], samples: list[tuple[str, int]],
                           fix: str) -> None:
    """One warning line naming the training classes without a test image: the test numbers say
    nothing about them (their recall cannot be measured). ``fix`` says where their test images go."""
    tested = {label for _, label in samples}
    untested = [name for i, name in enumerate(classes) if i not in tested]
    if untested and samples:
        warnings.warn(f"{folder}: no test images of the training class(es) {', '.join(map(repr, untested))}; the "
                      f"test figures say nothing about them — {fix}", NeurotomyWarning)


def _test_samples(folder: Path, reference: _Reference) -> list[tuple[str, int]]:
    """The test split of a train/test folder, checked like the training folder before any work: every header
    read (a corrupt file is an error now, not after training), every size the training images' own."""
    scan = _scan(folder)
    _warn_left_out(scan)
    _warn_unknown_test_classes(folder, reference.classes, scan)
    samples = _samples(scan, reference.classes)
    _warn_untested_classes(folder, reference.classes, samples, f"add test images of them to {folder}/NAME/")
    _, sizes = _headers([path for path, _ in samples])
    if reference.size is not None and sizes:
        _check_test_sizes(folder, sizes, reference.size)
    return samples


@dataset_source("image-folder", argument="PATH", options=("class_names", "input_size"), flip_safe=False,
                help="one sub-folder of images per class (PATH/train and PATH/test, or PATH itself, of "
                     f"which {FLAT_TEST_FRACTION:.0%} of each class is held out for testing)")
def load_image_folder(argument: str | None, root: Path | None, split: str, class_names=None,
                      input_size: int | None = None) -> FileImageDataset:
    if argument is None and root is None:
        raise DataError("image-folder needs a directory: write image-folder:PATH")
    path = (Path(argument).expanduser() if argument is not None else root).resolve()
    if not path.is_dir():
        raise DataError(f"{path}: no such directory; give image-folder:PATH with one folder per class")
    flat = not (path / "train").is_dir()
    if flat and (path / "test").is_dir():  # else read as a flat folder with one class named "test"
        raise DataError(f"{path} has a test/ folder but no train/ folder; add train/ with the same class folders "
                        f"(or put the class folders directly in {path})")
    folder, reference = (path, path) if flat else (path / split, path / "train")
    if not folder.is_dir():
        raise DataError(f"{folder}: no such directory; {path} has a train/ folder, so it needs a {split}/ folder "
                        "with the same class sub-folders")
    ref = _folder_reference(str(reference), input_size, flat)
    classes = ref.classes
    samples = _test_samples(folder, ref) if split == "test" and not flat else list(ref.samples)
    if flat:
        if split == "test":  # where the test numbers come from, said once a command (each loads one test split)
            _warn_held_out(path, samples)
        samples = _flat_split(samples, split)
        if split == "test":
            _warn_untested_classes(path, classes, samples, "add images to them (a class of two or more images has "
                                   f"one held out), or give {path} train/ and test/ folders")
    if not samples:
        raise DataError(f"{folder}: no {split} images in its class folders ({', '.join(classes)}); supported "
                        "files: .png, .jpg, .bmp, .gif, .tif, .webp and the other formats Pillow decodes"
                        + ("; a flat folder needs two images of a class to hold one out for testing" if flat else ""))
    names = resolve_class_names(len(classes), class_names, None, str(path)) if class_names else list(classes)
    options = {k: v for k, v in (("class_names", class_names), ("input_size", input_size)) if v is not None}
    pixels = PilPixels(PilFiles([p for p, _ in samples], ref.size), ref.mode, input_size)
    return FileImageDataset(pixels, torch.tensor([t for _, t in samples], dtype=torch.long), names,
                            ref.normalization, f"image-folder:{path}", root=str(path), options=options,
                            flip_safe=False)


# ---------------------------------------------------------------- torchvision datasets

def _torchvision_split(name: str, root: Path, split: str):
    """The torchvision dataset ``name`` (images as PIL) from ``root``, never downloading."""
    from torchvision import datasets

    cls = getattr(datasets, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)):
        raise DataError(f"torchvision has no dataset {name!r}; use a class name such as CIFAR10 or MNIST")
    params = inspect.signature(cls.__init__).parameters
    if "root" not in params:  # FakeData and the like make their images up: nothing to read under --root
        raise DataError(f"torchvision:{name} reads no files (it takes no root directory); neurotomy reads "
                        "torchvision datasets stored under --root, such as torchvision:CIFAR10 or torchvision:MNIST")
    kwargs: dict = {}
    if "train" in params:
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = split
    if "download" in params:
        kwargs["download"] = False
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, FileNotFoundError, OSError, ValueError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0].rstrip(".")
        raise DataError(f"torchvision:{name}: no usable local copy under {root} ({reason}); neurotomy never "
                        f"downloads: fetch it once with torchvision.datasets.{name}(ROOT, download=True) on a "
                        "connected machine and pass --root ROOT") from None


def _torchvision_targets(dataset) -> torch.Tensor:
    for attr in ("targets", "labels", "_labels"):
        labels = getattr(dataset, attr, None)
        if labels is not None:
            return torch.as_tensor(labels if not isinstance(labels, torch.Tensor) else labels.clone()).long().flatten()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


@lru_cache(maxsize=8)
def _torchvision_reference(name: str, root: str, input_size: int | None) -> tuple[str, Normalization]:
    """Colour mode and normalisation of the training split (measured once per process)."""
    source = PilFromDataset(_torchvision_split(name, Path(root), "train"))
    mode, _ = _layout(source, f"torchvision:{name}", input_size)
    return mode, _measured(PilPixels(source, mode, input_size))


@dataset_source("torchvision", argument="NAME", options=("class_names", "input_size"), flip_safe=False,
                help="a torchvision dataset class already downloaded under --root (never downloads)")
def load_torchvision(argument: str | None, root: Path | None, split: str, class_names=None,
                     input_size: int | None = None) -> FileImageDataset:
    if not argument:
        raise DataError("torchvision needs a dataset class name: write torchvision:NAME, e.g. torchvision:CIFAR10")
    root = (root if root is not None else Path.home() / ".cache" / "neurotomy" / argument).resolve()
    dataset = _torchvision_split(argument, root, split)
    if len(dataset) == 0:
        raise DataError(f"torchvision:{argument}: the {split} split under {root} is empty")
    dataset.transform = None  # PIL images out; PilPixels converts them
    targets = _torchvision_targets(dataset)
    mode, norm = _torchvision_reference(argument, str(root), input_size)
    listed = list(getattr(dataset, "classes", None) or [])
    count = max(len(listed), int(targets.max()) + 1)
    names = resolve_class_names(count, class_names, None, f"torchvision:{argument}") if class_names else (
        [str(c) for c in listed] if len(listed) == count else [str(c) for c in range(count)])
    options = {k: v for k, v in (("class_names", class_names), ("input_size", input_size)) if v is not None}
    pixels = PilPixels(PilFromDataset(dataset), mode, input_size)
    return FileImageDataset(pixels, targets, names, norm, f"torchvision:{argument}", root=str(root),
                            options=options, flip_safe=argument in FLIP_SAFE_TORCHVISION)


__all__ = ["FLIP_SAFE_TORCHVISION", "LAYOUT_SAMPLE", "NORMALIZATION_SAMPLE", "load_image_folder", "load_torchvision"]
