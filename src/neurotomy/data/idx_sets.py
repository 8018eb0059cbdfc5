"""IDX datasets: any directory of ``train-``/``t10k-`` (or ``test-``) image and label files.

``idx:PATH`` reads ``PATH/train-images-idx3-ubyte[.gz]`` and ``PATH/train-labels-idx1-ubyte[.gz]``
(``t10k-`` or ``test-`` for the test split; MNIST's, Kaggle's ``train-images.idx3-ubyte`` and
EMNIST's ``emnist-…-train-images-idx3-ubyte`` spellings too; ``idx4`` files hold colour images as
N×H×W×C). Class names come from ``class_names=``, else ``PATH/classes.txt`` (one per line), else
``0 … K-1``. The normalisation is measured on the training images, whichever split is loaded, so
both splits are normalised alike; with no training files, on the split itself. Horizontal flips are
not declared label-safe: nothing is known of the data.

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

from neurotomy.data.idx import PREFIXES, find_idx_file, images01, read_idx, read_idx_split
from neurotomy.data.sources import dataset_source, resolve_class_names
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset, measure_normalization
from neurotomy.errors import DataError, NeurotomyWarning

CLASSES_FILE = "classes.txt"


@lru_cache(maxsize=16)
def _train_statistics(images_path: str, mtime_ns: int) -> Normalization:
    return measure_normalization([images01(read_idx(images_path))])


def train_normalization(images_path: Path) -> Normalization:
    """Per-channel statistics of a training images file (measured once per file version)."""
    return _train_statistics(str(images_path), images_path.stat().st_mtime_ns)


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
    return {split: {int(v) for v in np.unique(read_idx(path))} for split, path in found.items() if path is not None}


def _labels_count(labels: np.ndarray, by_split: dict[str, set[int]]) -> int:
    """Classes in the set: one more than the largest label of either split's label file."""
    largest = int(labels.max()) if labels.size else 0
    return max([largest, *(max(found) for found in by_split.values() if found)]) + 1


def _warn_test_only_labels(directory: Path, labels: dict[str, set[int]], count: int) -> None:
    """One warning line naming the test labels that no training image has: a model trained on the set
    gets outputs for them that it never learns, and its test accuracy counts them as errors."""
    train, test = labels.get("train", set()), labels.get("test", set())
    only = sorted(test - train)
    if train and only:
        shown = ", ".join(map(str, only[:10])) + ("…" if len(only) > 10 else "")
        warnings.warn(f"{directory}: test labels {shown} never occur in the training labels ({len(train)} distinct, "
                      f"{min(train)}…{max(train)}); the set has {count} classes (labels 0…{count - 1}), "
                      f"{count - len(train)} without a training image, which a model trained here never learns: "
                      "check the label files", NeurotomyWarning)


@dataset_source("idx", argument="PATH", options=("class_names",), flip_safe=False,
                help="any IDX set: train-/t10k- images-idx3-ubyte and labels-idx1-ubyte files, optional classes.txt")
def load_idx_set(argument: str | None, root: Path | None, split: str, class_names=None) -> TensorImageDataset:
    directory = _directory(argument, root)
    images_path, labels_path = find_idx_file(directory, split, "images"), find_idx_file(directory, split, "labels")
    if images_path is None or labels_path is None:
        stem = f"{PREFIXES[split][0]}-{'images-idx3' if images_path is None else 'labels-idx1'}-ubyte"
        raise DataError(f"{directory}: no {stem}[.gz] for the {split} split; an idx: directory holds "
                        f"train- and t10k- (or test-) images-idx3-ubyte and labels-idx1-ubyte files")
    images, labels = read_idx_split(images_path, labels_path)
    by_split = _split_labels(directory)
    count = _labels_count(labels, by_split)
    if split == "test":  # said once a command (each loads one test split)
        _warn_test_only_labels(directory, by_split, count)
    classes = resolve_class_names(count, class_names, directory / CLASSES_FILE, str(directory))
    train_images = find_idx_file(directory, "train", "images")
    x = images01(images)
    norm = train_normalization(train_images) if train_images is not None else measure_normalization([x])
    if len(norm.mean) != x.shape[1]:
        raise DataError(f"{directory}: the train images have {len(norm.mean)} channels but the {split} images "
                        f"{x.shape[1]}; both splits must hold the same kind of image")
    options = {"class_names": list(class_names)} if class_names is not None else {}
    return TensorImageDataset(norm.apply(x), torch.from_numpy(labels).long(), classes, norm,
                              f"idx:{directory}", root=str(directory), options=options, flip_safe=False)


__all__ = ["CLASSES_FILE", "load_idx_set", "train_normalization"]
