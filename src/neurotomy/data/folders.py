"""Sources for users with their own images or with internet: ImageFolder and torchvision."""

from __future__ import annotations

from pathlib import Path

from neurotomy.data.tensor_dataset import Normalization
from neurotomy.errors import DataError

# ImageNet statistics: the usual choice for natural RGB images of unknown origin.
IMAGENET_NORMALIZATION = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _attach(dataset, classes, normalization: Normalization):
    dataset.classes = list(classes)
    dataset.normalization = normalization
    return dataset


def load_image_folder(path: Path, split: str):
    """``path/train`` and ``path/test`` if present, else ``path`` for both splits."""
    from torchvision import datasets, transforms

    folder = path / split if (path / split).is_dir() else path
    if not folder.is_dir():
        raise DataError(f"{folder}: no such directory; give image-folder:PATH with one folder per class")
    norm = IMAGENET_NORMALIZATION
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(norm.mean, norm.std)])
    try:
        ds = datasets.ImageFolder(str(folder), transform=tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{folder}: not an image folder ({exc}); use one sub-folder of images per class") from None
    return _attach(ds, ds.classes, norm)


def load_torchvision(name: str, root, split: str):
    """A torchvision dataset by class name (e.g. ``CIFAR10``); downloads into ``root``."""
    from torchvision import datasets, transforms

    cls = getattr(datasets, name, None)
    if cls is None:
        raise DataError(f"torchvision has no dataset {name!r}; use a class name such as CIFAR10 or MNIST")
    root = Path(root) if root else Path.home() / ".cache" / "neurotomy" / name
    tf = transforms.ToTensor()
    try:
        ds = cls(str(root), train=(split == "train"), download=True, transform=tf)
    except Exception as exc:  # network errors come in many types
        raise DataError(f"torchvision:{name}: could not load or download into {root} ({exc}); "
                        "check your connection or use --root with a local copy") from None
    classes = getattr(ds, "classes", [str(i) for i in range(10)])
    x0 = ds[0][0]
    norm = Normalization(tuple([0.5] * x0.shape[0]), tuple([0.5] * x0.shape[0]))
    ds.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(norm.mean, norm.std)])
    return _attach(ds, classes, norm)
