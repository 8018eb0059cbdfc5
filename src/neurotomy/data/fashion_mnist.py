"""Fashion-MNIST: a named preset of :mod:`neurotomy.data.idx_sets` with Zalando's class names and
normalisation, from a full copy under a root or the subset shipped in the package.

Clothing keeps its label when mirrored, so this source declares flips label-safe.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch

from neurotomy.data.idx import find_idx_file, images01, read_idx_split
from neurotomy.data.sources import dataset_source
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.errors import DataError

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Statistics of the full 60k training set; the subset uses the same so models transfer.
FMNIST_NORMALIZATION = Normalization(mean=(0.2860,), std=(0.3530,))
_PREFIX = {"train": "train", "test": "t10k"}


def shipped_root() -> Path:
    """Directory of the balanced subset that ships with the package."""
    return Path(str(resources.files("neurotomy") / "assets" / "fashion-mnist-subset"))


def _find(root: Path, split: str, kind: str) -> Path:
    found = find_idx_file(root, split, kind)
    if found is None:
        stem = f"{_PREFIX[split]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        raise DataError(
            f"{root / (stem + '.gz')}: not found; point --root (or NEUROTOMY_DATA) at a directory "
            f"holding the Fashion-MNIST IDX files ({stem}[.gz])"
        )
    return found


def load_fashion_mnist(root: Path | None, split: str) -> TensorImageDataset:
    """Read ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` from ``root`` (default: the shipped subset)."""
    directory = root if root is not None else shipped_root()
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory; point --root at the Fashion-MNIST IDX files")
    images_path, labels_path = _find(directory, split, "images"), _find(directory, split, "labels")
    images, labels = read_idx_split(images_path, labels_path, where="--root or NEUROTOMY_DATA")
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: Fashion-MNIST images are 28×28 grey, found shape {images.shape[1:]}; "
                        "for other IDX data use idx:PATH")
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{labels_path}: label {labels.max()} out of range 0..9; wrong file? "
                        "(for other IDX data use idx:PATH)")
    return TensorImageDataset(
        FMNIST_NORMALIZATION.apply(images01(images)),
        torch.from_numpy(labels).long(),
        classes=CLASSES,
        normalization=FMNIST_NORMALIZATION,
        name="fashion-mnist",
        root=str(directory.resolve()) if root is not None else None,
        flip_safe=True,
    )


@dataset_source("fashion-mnist", flip_safe=True,
                help="Zalando's Fashion-MNIST (IDX); the shipped 500+200 per class subset, or --root / NEUROTOMY_DATA")
def fashion_mnist_source(argument: str | None, root: Path | None, split: str) -> TensorImageDataset:
    if root is None and os.environ.get("NEUROTOMY_DATA"):
        root = Path(os.environ["NEUROTOMY_DATA"]).expanduser()
    return load_fashion_mnist(root, split)
