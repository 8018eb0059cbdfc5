"""Fashion-MNIST from IDX files: a full copy under a root, or the subset shipped in the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from neurotomy.data.idx import read_idx
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


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.exists():
            return candidate
    raise DataError(
        f"{root / (stem + '.gz')}: not found; point --root (or NEUROTOMY_DATA) at a directory "
        f"holding the Fashion-MNIST IDX files ({stem}[.gz])"
    )


def load_fashion_mnist(root: Path | None, split: str) -> TensorImageDataset:
    """Read ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` from ``root``."""
    root = root if root is not None else shipped_root()
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; point --root at the Fashion-MNIST IDX files")
    images_path = _find(root, f"{_PREFIX[split]}-images-idx3-ubyte")
    labels_path = _find(root, f"{_PREFIX[split]}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected a 3-d image array, found shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected a 1-d label array, found shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "the two files do not belong together"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{labels_path}: label {labels.max()} out of range 0..9; wrong file?")
    x = torch.from_numpy(images).float().unsqueeze(1) / 255.0
    return TensorImageDataset(
        FMNIST_NORMALIZATION.apply(x),
        torch.from_numpy(labels).long(),
        classes=CLASSES,
        normalization=FMNIST_NORMALIZATION,
        name="fashion-mnist",
    )
