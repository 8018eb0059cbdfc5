"""IDX datasets: any directory of ``train-``/``t10k-`` (or ``test-``) image and label files.

``idx:PATH`` reads ``PATH/train-images-idx3-ubyte[.gz]`` and ``PATH/train-labels-idx1-ubyte[.gz]``
(``t10k-`` or ``test-`` for the test split; MNIST's, Kaggle's ``train-images.idx3-ubyte`` and
EMNIST's ``emnist-…-train-images-idx3-ubyte`` spellings too; ``idx4`` files hold colour images as
N×H×W×C). Class names come from ``class_names=``, else ``PATH/classes.txt`` (one per line), else
``0 … K-1``. The normalisation is measured on the training images, whichever split is loaded, so
both splits are normalised alike; with no training files, on the split itself. Both splits must hold
images of one size, unless ``input_size`` resizes them. The classes are ``0 …`` the largest label:
a class without a training image is named in a warning, and a set where over three quarters of them
have none (a stray label such as 255) is an error. Horizontal flips are not declared label-safe:
nothing is known of the data.

Example:
    >>> import numpy as np, tempfile
    >>> from neurotomy.data.idx import write_idx
    >>> d = Path(tempfile.mkdtemp())
    >>> write_idx(d / "train-images-idx3-ubyte.gz", np.full((4, 6, 6), 51, dtype=np.uint8))
    >>> write_idx(d / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 1], dtype=np.uint8))
    >>> _ = (d / "classes.txt").write_text("red\\ngreen\\nblue\\n")
    >>> ds = load_idx_set(str(d), None, "train")
    >>> ds.classes, ds.normalization.mean, ds.name == f"idx:{d.resolve()}"
    (['red', 'green', 'blue'], (0.2,), True)
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from neurotomy.data.idx import PREFIXES, find_idx_file, images01, read_idx, read_idx_images, read_idx_split
from neurotomy.data.sources import dataset_source, resolve_class_names
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset, measure_normalization
from neurotomy.errors import DataError, NeurotomyWarning

CLASSES_FILE = "classes.txt"
EMPTY_CLASSES_ERROR = 3 / 4
"""Share of the classes without a training image above which an IDX set is refused, not warned about:
the labels then hold a marker (255 for "unlabelled") or another numbering, not a class or two left out."""


def _measured(images: np.ndarray, path: str | Path) -> Normalization:
    """The statistics of the images a set is normalised by; none is an error naming their file (the
    statistics, and any training, need at least one image)."""
    if len(images) == 0:
        raise DataError(f"{path}: holds no images; write it again with the split's images (training and "
                        "measuring the normalisation need at least one)")
    return measure_normalization([images01(images)])


@lru_cache(maxsize=16)
def _train_images(images_path: str, mtime_ns: int, where: str) -> tuple[Normalization, tuple[int, ...]]:
    images = read_idx_images(Path(images_path), where=where)
    return _measured(images, images_path), tuple(images01(images[:1]).shape[1:])


def train_normalization(images_path: Path, where: str = "the path") -> Normalization:
    """Per-channel statistics of a training images file (measured once per file version)."""
    return _train_images(str(images_path), images_path.stat().st_mtime_ns, where)[0]


def _train_image_shape(images_path: Path, where: str) -> tuple[int, ...]:
    """C, H, W of a training images file (read with its statistics, once per file version)."""
    return _train_images(str(images_path), images_path.stat().st_mtime_ns, where)[1]


def _directory(argument: str | None, root: Path | None) -> Path:
    if argument is None and root is None:
        raise DataError("idx needs a directory: write idx:PATH (or give --root PATH)")
    directory = Path(argument).expanduser() if argument is not None else root
    directory = directory.resolve()
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory; idx:PATH needs a directory of IDX files")
    return directory


def _split_labels(directory: Path) -> dict[str, set[int]]:
    """The distinct labels of each split that has a label file."""
    found = {split: find_idx_file(directory, split, "labels") for split in PREFIXES}
    return {split: {int(v) for v in np.unique(read_idx(path, where=f"idx:{directory}"))}
            for split, path in found.items() if path is not None}


def _labels_count(labels: np.ndarray, by_split: dict[str, set[int]]) -> int:
    """Classes in the set: one more than the largest label of either split's label file."""
    largest = int(labels.max()) if labels.size else 0
    return max([largest, *(max(found) for found in by_split.values() if found)]) + 1


def _shown(labels: list[int]) -> str:
    """Sorted labels as a short list, runs folded: ``3…254`` for 252 of them, at most 10 items."""
    runs: list[list[int]] = []
    for label in labels:
        if runs and label == runs[-1][-1] + 1:
            runs[-1].append(label)
        else:
            runs.append([label])
    items = [f"{r[0]}…{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs]
    return ", ".join(items[:10]) + ("…" if len(items) > 10 else "")


def _check_classes_without_training_images(directory: Path, labels: dict[str, set[int]], count: int,
                                           warn: bool) -> None:
    """The classes ``0 … count-1`` that no training image has (test-only labels, or gaps in the training
    labels): a model trained on the set gets outputs for them that it never learns, and its test
    accuracy counts them as errors. Over :data:`EMPTY_CLASSES_ERROR` of the classes is a
    :class:`DataError` (said on any split, before training); fewer is one warning line when ``warn``
    (the test split: said once a command)."""
    train, test = labels.get("train", set()), labels.get("test", set())
    missing = sorted(set(range(count)) - train)
    if not train or not missing:
        return
    only = sorted(test - train)
    what = (f"test labels {_shown(only)} never occur in the training labels (" if only
            else f"{'labels' if len(missing) > 1 else 'label'} {_shown(missing)} "
                 f"{'have' if len(missing) > 1 else 'has'} no training image (the training labels: ")
    line = (f"{directory}: {what}{len(train)} distinct, {min(train)}…{max(train)}); the set has {count} classes "
            f"(labels 0…{count - 1}), {len(missing)} without a training image")
    if len(missing) > EMPTY_CLASSES_ERROR * count:
        raise DataError(f"{line}: number the classes 0…K-1 without gaps in the label files (or drop the images "
                        f"labelled {max(train | test)})")
    if warn:
        warnings.warn(f"{line}, which a model trained here never learns: check the label files", NeurotomyWarning)


def _check_same_images(directory: Path, split: str, train_shape: tuple[int, ...], shape: tuple[int, ...],
                       resized: bool) -> None:
    """Both splits hold one kind of image: the same channels, and the same H×W unless ``input_size``
    resizes both (a model takes one size; a test split of another fails only at evaluation, after training)."""
    if train_shape[0] != shape[0]:
        raise DataError(f"{directory}: the train images have {train_shape[0]} channels but the {split} images "
                        f"{shape[0]}; both splits must hold the same kind of image")
    if not resized and train_shape[1:] != shape[1:]:
        raise DataError(f"{directory}: the {split} images are {shape[1]}×{shape[2]} but the train images "
                        f"{train_shape[1]}×{train_shape[2]}; pass --input-size N (input_size=N) to resize both")


@dataset_source("idx", argument="PATH", options=("class_names", "input_size"), flip_safe=False,
                help="any IDX set: train-/t10k- images-idx3-ubyte and labels-idx1-ubyte files, optional classes.txt")
def load_idx_set(argument: str | None, root: Path | None, split: str, class_names=None,
                 input_size: int | None = None) -> TensorImageDataset:
    directory = _directory(argument, root)
    where = f"idx:{directory}"
    images_path, labels_path = find_idx_file(directory, split, "images"), find_idx_file(directory, split, "labels")
    if images_path is None or labels_path is None:
        stem = f"{PREFIXES[split][0]}-{'images-idx3' if images_path is None else 'labels-idx1'}-ubyte"
        raise DataError(f"{directory}: no {stem}[.gz] for the {split} split; an idx: directory holds "
                        f"train- and t10k- (or test-) images-idx3-ubyte and labels-idx1-ubyte files")
    images, labels = read_idx_split(images_path, labels_path, where=where)
    train_images = find_idx_file(directory, "train", "images")
    x = images01(images)
    if train_images is not None:
        norm = train_normalization(train_images, where)  # also refuses an empty training file, naming it
        _check_same_images(directory, split, _train_image_shape(train_images, where), tuple(x.shape[1:]),
                           input_size is not None)
    else:
        norm = _measured(images, images_path)
    by_split = _split_labels(directory)
    count = _labels_count(labels, by_split)
    _check_classes_without_training_images(directory, by_split, count, warn=split == "test")
    classes = resolve_class_names(count, class_names, directory / CLASSES_FILE, str(directory))
    options = {"class_names": list(class_names)} if class_names is not None else {}
    data = TensorImageDataset(norm.apply(x), torch.from_numpy(labels).long(), classes, norm,
                              f"idx:{directory}", root=str(directory), options=options, flip_safe=False)
    return data.resized(input_size) if input_size is not None else data


__all__ = ["CLASSES_FILE", "load_idx_set", "train_normalization"]
