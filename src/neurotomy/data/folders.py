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
``torchvision:NAME`` reads ``root`` (default ``~/.cache/neurotomy/NAME``); flips are label-safe for
the natural-image datasets in :data:`FLIP_SAFE_TORCHVISION`, not for digits or letters.
"""

from __future__ import annotations

import inspect
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from neurotomy.data.batches import iterate_batches
from neurotomy.data.file_dataset import GRAYSCALE_MODES, FileImageDataset, PilFiles, PilFromDataset, PilPixels
from neurotomy.data.sources import dataset_source, resolve_class_names
from neurotomy.data.subsets import held_out_indices
from neurotomy.data.tensor_dataset import Normalization, measure_normalization
from neurotomy.errors import DataError, NeurotomyWarning

NORMALIZATION_SAMPLE = 2000
"""Training images the normalisation of data read from disk is measured on (evenly spaced)."""
LAYOUT_SAMPLE = 256
"""Images whose colour mode and size are inspected to decide the colour and check the size."""
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

def _samples(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) of every image in ``folder``'s class sub-folders, sorted by class then name."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        return make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{folder}: not an image folder ({str(exc).splitlines()[0]}); use one sub-folder per "
                        "class") from None


def _flat_split(samples: list[tuple[str, int]], split: str) -> list[tuple[str, int]]:
    """The ``split`` part of a flat folder's images: the held-out draw for test, the rest for train."""
    held_out = set(held_out_indices(torch.tensor([t for _, t in samples]), FLAT_TEST_FRACTION,
                                    FLAT_SPLIT_SEED).tolist())
    return [sample for i, sample in enumerate(samples) if (i in held_out) == (split == "test")]


@lru_cache(maxsize=16)
def _folder_reference(reference: str, input_size: int | None,
                      flat: bool) -> tuple[tuple[str, ...], str, Normalization]:
    """Class names, colour mode and normalisation of a training folder (measured once per process;
    of a flat folder, on its training part)."""
    from torchvision.datasets.folder import find_classes

    try:
        classes, class_to_idx = find_classes(reference)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{reference}: not an image folder ({str(exc).splitlines()[0]}); use one sub-folder of "
                        "images per class") from None
    samples = _samples(Path(reference), class_to_idx)
    if flat and samples:
        samples = _flat_split(samples, "train")
    if not samples:
        raise DataError(f"{reference}: no images in its class folders ({', '.join(classes)}); add images "
                        "(.png, .jpg, …) to them")
    files = PilFiles([path for path, _ in samples])
    mode, _ = _layout(files, reference, input_size)
    return tuple(classes), mode, _measured(PilPixels(files, mode, input_size))


def _warn_held_out(path: Path, samples: list[tuple[str, int]]) -> None:
    """One warning line: a flat folder's test split is a held-out part of its images (:func:`_flat_split`)."""
    held_out = len(_flat_split(samples, "test"))
    warnings.warn(f"{path} has no train/ and test/ folders: {held_out} of its {len(samples)} images "
                  f"({FLAT_TEST_FRACTION:.0%} of each class, fixed seed {FLAT_SPLIT_SEED}) are held out as its test "
                  "split, the rest train", NeurotomyWarning)


def _warn_unknown_test_classes(folder: Path, classes: tuple[str, ...]) -> None:
    """One warning line naming the class folders of ``folder`` (a test split) that training lacks, with
    their image counts: their images are left out, and a misnamed folder should not pass unnoticed."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes)
    counts = {name: sum(1 for f in (folder / name).rglob("*") if f.is_file()
                        and has_file_allowed_extension(f.name, IMG_EXTENSIONS)) for name in unknown}
    counts = {name: n for name, n in counts.items() if n}
    if counts:
        shown = ", ".join(f"{name!r} ({n} image{'s' if n != 1 else ''})" for name, n in counts.items())
        warnings.warn(f"{folder}: test class folders not in {folder.parent / 'train'} are left out: {shown}; give "
                      "them training folders of the same names, or rename them to a training class",
                      NeurotomyWarning)


def _warn_untested_classes(folder: Path, classes: tuple[str, ...], samples: list[tuple[str, int]]) -> None:
    """One warning line naming the training classes without a test image: the test numbers say
    nothing about them (their recall cannot be measured)."""
    tested = {label for _, label in samples}
    untested = [name for i, name in enumerate(classes) if i not in tested]
    if untested and samples:
        warnings.warn(f"{folder}: no test images of the training class(es) {', '.join(map(repr, untested))}; the "
                      "test figures say nothing about them — add a test folder of the same name with images",
                      NeurotomyWarning)


@dataset_source("image-folder", argument="PATH", options=("class_names", "input_size"), flip_safe=False,
                help="one sub-folder of images per class (PATH/train and PATH/test, or PATH itself, of "
                     f"which {FLAT_TEST_FRACTION:.0%} of each class is held out for testing)")
def load_image_folder(argument: str | None, root: Path | None, split: str, class_names=None,
                      input_size: int | None = None) -> FileImageDataset:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if argument is None and root is None:
        raise DataError("image-folder needs a directory: write image-folder:PATH")
    path = (Path(argument).expanduser() if argument is not None else root).resolve()
    if not path.is_dir():
        raise DataError(f"{path}: no such directory; give image-folder:PATH with one folder per class")
    flat = not (path / "train").is_dir()
    folder, reference = (path, path) if flat else (path / split, path / "train")
    if not folder.is_dir():
        raise DataError(f"{folder}: no such directory; {path} has a train/ folder, so it needs a {split}/ folder "
                        "with the same class sub-folders")
    classes, mode, norm = _folder_reference(str(reference), input_size, flat)
    samples = _samples(folder, {c: i for i, c in enumerate(classes)})
    if flat:
        if split == "test":  # where the test numbers come from, said once a command (each loads one test split)
            _warn_held_out(path, samples)
        samples = _flat_split(samples, split)
    elif split == "test":
        _warn_unknown_test_classes(folder, classes)
        _warn_untested_classes(folder, classes, samples)
    if not samples:
        raise DataError(f"{folder}: no {split} images in its class folders ({', '.join(classes)}); supported "
                        f"files: {', '.join(IMG_EXTENSIONS)}" + ("; a flat folder needs two images of a class to "
                                                                   "hold one out for testing" if flat else ""))
    names = resolve_class_names(len(classes), class_names, None, str(path)) if class_names else list(classes)
    options = {k: v for k, v in (("class_names", class_names), ("input_size", input_size)) if v is not None}
    pixels = PilPixels(PilFiles([p for p, _ in samples]), mode, input_size)
    return FileImageDataset(pixels, torch.tensor([t for _, t in samples], dtype=torch.long), names, norm,
                            f"image-folder:{path}", root=str(path), options=options, flip_safe=False)


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
