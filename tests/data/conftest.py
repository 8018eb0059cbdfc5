"""Small datasets of the user's own, written into temporary directories: an IDX set that is not
Fashion-MNIST (scikit-learn's digits upscaled to 28×28, with classes.txt), image folders (RGB and
grey PNGs), and a local copy of torchvision's MNIST layout."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurotomy.data.idx import write_idx

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_28(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` scikit-learn digits, bilinearly upscaled from 8×8 to 28×28 uint8."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images[:count], dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).squeeze(1)
    return (x * 255).round().clamp(0, 255).to(torch.uint8).numpy(), bunch.target[:count].astype(np.uint8)


def write_idx_set(directory: Path, images: np.ndarray, labels: np.ndarray, test: int,
                  names: list[str] | None = None, test_prefix: str = "t10k") -> Path:
    """``images``/``labels`` as an IDX set: the last ``test`` of them are the test split."""
    directory.mkdir(parents=True, exist_ok=True)
    cut = len(images) - test
    write_idx(directory / "train-images-idx3-ubyte.gz", images[:cut])
    write_idx(directory / "train-labels-idx1-ubyte.gz", labels[:cut])
    write_idx(directory / f"{test_prefix}-images-idx3-ubyte.gz", images[cut:])
    write_idx(directory / f"{test_prefix}-labels-idx1-ubyte.gz", labels[cut:])
    if names is not None:
        (directory / "classes.txt").write_text("\n".join(names) + "\n")
    return directory


@pytest.fixture(scope="session")
def digits_idx(tmp_path_factory) -> Path:
    """300 digits at 28×28 (240 train, 60 test) with classes.txt: not Fashion-MNIST in any way."""
    images, labels = digits_28(300)
    return write_idx_set(tmp_path_factory.mktemp("digits-idx"), images, labels, test=60, names=DIGIT_NAMES)


def write_image_folder(root: Path, classes: dict[str, tuple[int, ...]], per_class: int, size: tuple[int, int],
                       mode: str = "RGB", seed: int = 0, splits: tuple[str, ...] = ("train", "test")) -> Path:
    """PNG images of flat colours plus noise, one sub-folder per class (under ``split`` folders)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in splits:
        for name, colour in classes.items():
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
                noise = rng.integers(-25, 25, shape)
                pixels = (np.array(colour if mode == "RGB" else colour[0]) + noise).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels, mode).save(folder / f"{i}.png")
    return root


@pytest.fixture
def rgb_folder(tmp_path) -> Path:
    """Two colours (red, blue), 5 RGB images each per split, 20 wide × 18 high."""
    return write_image_folder(tmp_path / "rgb", {"red": (200, 40, 40), "blue": (40, 40, 200)}, 5, (20, 18))


@pytest.fixture
def grey_folder(tmp_path) -> Path:
    """Three grey levels, 4 single-channel images each, 12×12, no train/test split."""
    return write_image_folder(tmp_path / "grey", {"dark": (40,), "mid": (128,), "light": (220,)}, 4, (12, 12),
                              mode="L", splits=("",))


@pytest.fixture
def local_mnist(tmp_path) -> Path:
    """torchvision's MNIST layout (ROOT/MNIST/raw, uncompressed IDX) holding 80 + 20 upscaled digits."""
    images, labels = digits_28(100)
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, array in (("train-images-idx3-ubyte", images[:80]), ("train-labels-idx1-ubyte", labels[:80]),
                        ("t10k-images-idx3-ubyte", images[80:]), ("t10k-labels-idx1-ubyte", labels[80:])):
        write_idx(raw / f"{stem}.gz", array)
        (raw / stem).write_bytes(gzip.decompress((raw / f"{stem}.gz").read_bytes()))
    return tmp_path / "tv"
