"""Datasets read from disk one image at a time: image folders and torchvision datasets.

A :class:`FileImageDataset` holds the labels in memory and reads each image when asked (through
DataLoader workers in :func:`neurotomy.data.batches.iterate_batches`), so a folder of any size
costs one batch of memory. Every image becomes the same thing whatever its file: converted to one
colour mode (``"L"`` or ``"RGB"``), resized and centre-cropped to ``input_size`` when one is given,
scaled to [0, 1], then normalised with the dataset's :class:`Normalization`. Greys wider than 8 bits
(16-bit PNGs, 32-bit TIFFs) keep their precision: their full range maps to [0, 1] (:func:`unit_grey`)
instead of being clipped at 255 by Pillow's ``convert("L")``.

Example:
    >>> import torch
    >>> class Grey:  # any source of PIL images, one per index
    ...     def __len__(self): return 2
    ...     def pil(self, i):
    ...         from PIL import Image
    ...         return Image.new("L", (4, 4), color=255 * i)
    >>> pixels = PilPixels(Grey(), "L", None)
    >>> ds = FileImageDataset(pixels, torch.tensor([0, 1]), ["dark", "light"], Normalization((0.5,), (0.5,)))
    >>> x, y = ds[1]; tuple(x.shape), float(x.max()), y
    ((1, 4, 4), 1.0, 1)
    >>> len(ds.subset(torch.tensor([1]))), ds.subset(torch.tensor([1])).targets.tolist()
    (1, [1])
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from neurotomy.data.tensor_dataset import Normalization
from neurotomy.errors import DataError

GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""PIL modes of single-channel images; any other mode is read as RGB."""
WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""Single-channel PIL modes of more than 8 bits, which :func:`unit_grey` scales (``convert("L")`` clips them)."""
FULL_SCALES = (1.0, 255.0, 65535.0, 2.0 ** 32 - 1)
"""The full-scale values a 32-bit grey (mode ``I`` or ``F``) is read against: the smallest that holds its maximum."""


def unit_grey(image):
    """A wide grey PIL image (:data:`WIDE_GREY_MODES`) as a mode ``"F"`` image in [0, 1]: 16-bit modes divided
    by 65535; ``I`` and ``F`` (whose bit depth the file does not say: a 16-bit PNG held in 32 bits, a float TIFF)
    by the smallest of :data:`FULL_SCALES` that holds the image's maximum, negatives clipped to 0. Pillow's
    ``convert("L")`` would clip every value above 255, leaving a 0…65535 image almost binary.

    Example:
        >>> from PIL import Image
        >>> grey = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
        >>> grey.mode, np.asarray(unit_grey(grey)).tolist()
        ('I;16', [[0.0, 1.0]])
    """
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        scale = 65535.0
    else:
        top = float(values.max(initial=0.0))
        scale = next((s for s in FULL_SCALES if top <= s), top)
    return Image.fromarray((values.clip(0, None) / scale).astype(np.float32))  # float32 → mode F


def _unreadable(path: str, exc: BaseException) -> DataError:
    """The one-line error for a file Pillow cannot open or decode."""
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    return DataError(f"{path}: not a readable image ({reason}); remove or replace the file")


def image_header(path: str) -> tuple[str, tuple[int, int]]:
    """Colour mode and (W, H) of the image file at ``path``, read from its header without decoding the pixels
    (about 30 µs a small PNG), so that every file of a folder can be checked before any work starts."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, exc) from None


class PilSource(Protocol):
    """Anything that returns the PIL image at an index."""

    def __len__(self) -> int: ...

    def pil(self, index: int): ...


class PilFiles:
    """Image files by path. With ``size`` (W, H), an image of another size is a one-line error naming the file:
    folders are checked before the work starts, but a file replaced since must not end in a traceback from
    a batch of mixed sizes."""

    def __init__(self, paths: Sequence[str], size: tuple[int, int] | None = None) -> None:
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def pil(self, index: int):
        from PIL import Image

        try:
            with Image.open(self.paths[index]) as image:
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # PIL: unidentified,
            raise _unreadable(self.paths[index], exc) from None  # truncated or malformed data
        if self.size is not None and image.size != self.size:
            (w, h), (width, height) = image.size, self.size
            raise DataError(f"{self.paths[index]}: a {w}×{h} image among {width}×{height} ones; pass --input-size N "
                            "(input_size=N) to resize and centre-crop them all to N×N, or replace the file")
        return image


class PilFromDataset:
    """The images of a torchvision dataset (whose ``transform`` is None, so it yields PIL images)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def pil(self, index: int):
        return self.dataset[index][0]


class PilPixels:
    """Images of a :class:`PilSource` as (C, H, W) tensors in [0, 1]: one colour mode, one size."""

    def __init__(self, source: PilSource, mode: str, input_size: int | None) -> None:
        from torchvision import transforms

        self.source, self.mode, self.input_size = source, mode, input_size
        steps = [transforms.Resize(input_size), transforms.CenterCrop(input_size)] if input_size else []
        self.transform = transforms.Compose([*steps, transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.source)

    def __call__(self, index: int) -> torch.Tensor:
        from PIL import Image

        image = self.source.pil(index)
        if image.mode in WIDE_GREY_MODES:  # float in [0, 1] (ToTensor keeps mode F as it is); 8-bit among RGB
            image = unit_grey(image)
            if self.mode != "L":
                image = Image.fromarray((np.asarray(image) * 255).round().astype(np.uint8))  # uint8 → mode L
        if image.mode != self.mode and not (image.mode == "F" and self.mode == "L"):
            image = image.convert(self.mode)
        return self.transform(image)


class FileImageDataset(Dataset):
    """Images read on demand, with labels, class names and normalisation (an
    :class:`~neurotomy.data.dataset.ImageDataset`). ``rows`` selects and orders a subset."""

    def __init__(self, pixels: PilPixels, targets: torch.Tensor, classes: list[str], normalization: Normalization,
                 name: str = "", *, root: str | None = None, options: dict | None = None, flip_safe: bool = False,
                 rows: torch.Tensor | None = None) -> None:
        if rows is None and len(targets) != len(pixels):
            raise ValueError("one target per image")
        self.pixels = pixels
        self.rows = rows
        self.targets = torch.as_tensor(targets).long() if rows is None else torch.as_tensor(targets).long()[rows]
        self._all_targets = torch.as_tensor(targets).long()
        self.classes = list(classes)
        self.normalization = normalization
        self.name, self.root, self.options, self.flip_safe = name, root, dict(options or {}), flip_safe
        self._mean = torch.tensor(normalization.mean).view(-1, 1, 1)
        self._std = torch.tensor(normalization.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = int(self.rows[index]) if self.rows is not None else int(index)
        return (self.pixels(row) - self._mean) / self._std, int(self._all_targets[row])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self[0][0].shape)  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor) -> "FileImageDataset":
        """The images at ``indices`` (of this dataset), read on demand like these."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        rows = indices if self.rows is None else self.rows[indices]
        return FileImageDataset(self.pixels, self._all_targets, self.classes, self.normalization, self.name,
                                root=self.root, options=self.options, flip_safe=self.flip_safe, rows=rows)

    def with_normalization(self, normalization: Normalization) -> "FileImageDataset":
        """The same images normalised with ``normalization``."""
        return FileImageDataset(self.pixels, self._all_targets, self.classes, normalization, self.name,
                                root=self.root, options=self.options, flip_safe=self.flip_safe, rows=self.rows)


__all__ = ["FULL_SCALES", "FileImageDataset", "GRAYSCALE_MODES", "PilFiles", "PilFromDataset", "PilPixels", "PilSource",
           "WIDE_GREY_MODES", "image_header", "unit_grey"]
