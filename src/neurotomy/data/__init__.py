"""Datasets behind one call: :func:`load_dataset`.

Names:
    ``digits``           scikit-learn's 8×8 digits, fixed stratified 80/20 split (seed 0).
    ``fashion-mnist``    Zalando's IDX files; defaults to the balanced subset shipped in the package
                         (500 train + 200 test images per class), or ``root=`` / ``NEUROTOMY_DATA``.
    ``image-folder:PATH``  a torchvision ImageFolder tree (PATH/train, PATH/test or PATH itself).
    ``torchvision:NAME`` a torchvision dataset (downloads; needs internet).

Example:
    >>> ds = load_dataset("digits", split="test")
    >>> ds.classes[:3], tuple(ds[0][0].shape)
    (['0', '1', '2'], (1, 8, 8))
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from neurotomy.data.digits import load_digits
from neurotomy.data.fashion_mnist import load_fashion_mnist
from neurotomy.data.folders import load_image_folder, load_torchvision
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.errors import DataError

DATASETS = ("digits", "fashion-mnist", "image-folder:PATH", "torchvision:NAME")
SPLITS = ("train", "test")


def load_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train") -> Dataset:
    """Load a dataset by name; the result has ``classes`` and ``normalization`` attributes."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if name == "digits":
        return load_digits(split)
    if name in ("fashion-mnist", "fmnist"):
        root = root if root is not None else os.environ.get("NEUROTOMY_DATA")
        return load_fashion_mnist(Path(root) if root else None, split)
    if name.startswith("image-folder:"):
        return load_image_folder(Path(name.split(":", 1)[1]), split)
    if name.startswith("torchvision:"):
        return load_torchvision(name.split(":", 1)[1], root, split)
    raise DataError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")


__all__ = ["load_dataset", "DATASETS", "SPLITS", "Normalization", "TensorImageDataset"]
