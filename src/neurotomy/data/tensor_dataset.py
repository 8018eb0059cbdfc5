"""An in-memory image dataset: every source that fits in memory becomes one of these.

Holding images as one normalised float tensor lets training and probing slice whole batches at
once instead of collating single images, which is what makes 2-core CPU training practical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset


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


class TensorImageDataset(Dataset):
    """Normalised images (N, C, H, W) with integer labels, class names and the normalisation.

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
    ) -> None:
        if images.ndim != 4 or len(images) != len(targets):
            raise ValueError("images must be (N, C, H, W) with one target per image")
        self.images = images.float().contiguous()
        self.targets = targets.long()
        self.classes = list(classes)
        self.normalization = normalization
        self.name = name

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor) -> "TensorImageDataset":
        """A dataset holding the given rows (shares nothing mutable with this one)."""
        return TensorImageDataset(
            self.images[indices], self.targets[indices], self.classes, self.normalization, self.name
        )
