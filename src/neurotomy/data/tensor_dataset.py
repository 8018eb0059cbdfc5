"""An in-memory image dataset: every source that fits in memory becomes one of these.

Holding images as one normalised float tensor lets training and probing slice whole batches at
once instead of collating single images, which is what makes 2-core CPU training practical.
It satisfies :class:`neurotomy.data.dataset.ImageDataset`; ``images`` is its own fast path, which
code that takes any dataset must not rely on (use :func:`neurotomy.data.dataset.batch_at`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch.utils.data import Dataset

from neurotomy.errors import DataError


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std applied to images scaled to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(tuple(float(m) for m in d["mean"]), tuple(float(s) for s in d["std"]))

    def apply(self, images01: torch.Tensor) -> torch.Tensor:
        """Normalise a batch (N, C, H, W) of images in [0, 1]."""
        mean = torch.tensor(self.mean, dtype=images01.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images01.dtype).view(1, -1, 1, 1)
        return (images01 - mean) / std

    @classmethod
    def identity(cls, channels: int) -> "Normalization":
        """Mean 0, std 1: leaves images as they are."""
        return cls((0.0,) * channels, (1.0,) * channels)


def measure_normalization(batches: Iterable[torch.Tensor], decimals: int = 4) -> Normalization:
    """Per-channel mean and std of every pixel of ``batches`` (N, C, H, W) of images in [0, 1],
    rounded to ``decimals`` (so the statistics a checkpoint records compare equal when measured
    again). A constant channel gets std 1, not 0. No images at all is a :class:`DataError`: the data the
    user gave is empty (a caller that knows the file checks first, to name it).

    Example:
        >>> measure_normalization([torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)])
        Normalization(mean=(0.5,), std=(0.5,))
    """
    total = squares = None
    count = 0
    for images in batches:
        x = images.double().transpose(0, 1).reshape(images.shape[1], -1)
        total = x.sum(1) if total is None else total + x.sum(1)
        squares = (x * x).sum(1) if squares is None else squares + (x * x).sum(1)
        count += x.shape[1]
    if total is None or count == 0:
        raise DataError("no images to measure the normalisation on; the training data is empty: add images")
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return Normalization(tuple(round(float(m), decimals) for m in mean),
                         tuple(round(float(s), decimals) for s in std))


class TensorImageDataset(Dataset):
    """Normalised images (N, C, H, W) with integer labels, class names and the normalisation; ``root``
    (the absolute directory read, None for built-in data), ``options`` (the load options that reload
    it) and ``flip_safe`` (mirroring keeps labels) as its source declared them.

    Example:
        >>> import torch
        >>> ds = TensorImageDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]),
        ...                         classes=["a", "b"], normalization=Normalization((0.0,), (1.0,)))
        >>> x, y = ds[1]; tuple(x.shape), int(y)
        ((1, 8, 8), 1)
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        classes: list[str],
        normalization: Normalization,
        name: str = "",
        *,
        root: str | None = None,
        options: dict | None = None,
        flip_safe: bool = False,
    ) -> None:
        if images.ndim != 4 or len(images) != len(targets):
            raise ValueError("images must be (N, C, H, W) with one target per image")
        self.images = images.float().contiguous()
        self.targets = targets.long()
        self.classes = list(classes)
        self.normalization = normalization
        self.name = name
        self.root = root
        self.options = dict(options or {})
        self.flip_safe = flip_safe

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def resized(self, size: int) -> "TensorImageDataset":
        """The images resized (short side to ``size``, bilinear with antialiasing) and centre-cropped to
        ``size``×``size`` — what image folders do with ``input_size``. Resizing is linear, so it
        commutes with the normalisation, which stays as it is."""
        import torch.nn.functional as F

        h, w = self.images.shape[-2:]
        if (h, w) == (size, size):
            return self
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        images = F.interpolate(self.images, size=(new_h, new_w), mode="bilinear", align_corners=False,
                               antialias=True)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        options = {**self.options, "input_size": size}
        return TensorImageDataset(images[..., top:top + size, left:left + size], self.targets, self.classes,
                                  self.normalization, self.name, root=self.root, options=options,
                                  flip_safe=self.flip_safe)

    def with_normalization(self, normalization: Normalization) -> "TensorImageDataset":
        """The same images normalised with ``normalization`` instead (a trained model's own, say).

        Example:
            >>> ds = TensorImageDataset(torch.ones(1, 1, 2, 2), torch.tensor([0]), ["a"], Normalization((0.5,), (0.5,)))
            >>> float(ds[0][0].max()), float(ds.with_normalization(Normalization((0.5,), (0.25,)))[0][0].max())
            (1.0, 2.0)
        """
        if normalization == self.normalization:
            return self
        mean, std = (torch.tensor(v, dtype=self.images.dtype).view(1, -1, 1, 1)
                     for v in (self.normalization.mean, self.normalization.std))
        return TensorImageDataset(normalization.apply(self.images * std + mean), self.targets, self.classes,
                                  normalization, self.name, root=self.root, options=self.options,
                                  flip_safe=self.flip_safe)

    def subset(self, indices: torch.Tensor) -> "TensorImageDataset":
        """A dataset holding the given rows (shares nothing mutable with this one)."""
        return TensorImageDataset(self.images[indices], self.targets[indices], self.classes, self.normalization,
                                  self.name, root=self.root, options=self.options, flip_safe=self.flip_safe)
