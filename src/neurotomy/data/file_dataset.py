"""Datasets read from disk one image at a time: image folders and torchvision datasets.

A :class:`FileImageDataset` holds the labels in memory and reads each image when asked (through
DataLoader workers in :func:`neurotomy.data.batches.iterate_batches`), so a folder of any size
costs one batch of memory. Every image becomes the same thing whatever its file: converted to one
colour mode (``"L"`` or ``"RGB"``), resized and centre-cropped to ``input_size`` when one is given,
scaled to [0, 1], then normalised with the dataset's :class:`Normalization`.

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

import torch
from torch.utils.data import Dataset

from neurotomy.data.tensor_dataset import Normalization
from neurotomy.errors import DataError

GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
"""PIL modes of single-channel images; any other mode is read as RGB."""


class PilSource(Protocol):
    """Anything that returns the PIL image at an index."""

    def __len__(self) -> int: ...

    def pil(self, index: int): ...


class PilFiles:
    """Image files by path."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def pil(self, index: int):
        from PIL import Image

        try:
            with Image.open(self.paths[index]) as image:
                image.load()
                return image
        except (OSError, SyntaxError, ValueError) as exc:  # PIL: unidentified, truncated or malformed data
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise DataError(f"{self.paths[index]}: not a readable image ({reason}); remove or replace the "
                            "file") from None


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
        image = self.source.pil(index)
        if image.mode != self.mode:
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


__all__ = ["FileImageDataset", "GRAYSCALE_MODES", "PilFiles", "PilFromDataset", "PilPixels", "PilSource"]
