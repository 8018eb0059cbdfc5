"""Subsets of a dataset: chosen rows, and class-balanced random picks.

Example:
    >>> import torch
    >>> balanced_indices(torch.tensor([0, 0, 1, 1, 1]), per_class=1).tolist()
    [0, 2]
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from neurotomy.data.labels import dataset_targets


class IndexedSubset(Dataset):
    """Rows ``indices`` of a dataset, keeping the fast in-memory path when there is one."""

    def __new__(cls, data, indices):
        if hasattr(data, "subset"):
            return data.subset(indices)
        return super().__new__(cls)

    def __init__(self, data, indices):
        self.dataset, self.indices = data, indices  # named as torch's Subset names them

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[int(self.indices[i])]


def balanced_indices(targets: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """``per_class`` random indices of each class, interleaved so every batch stays balanced."""
    g = torch.Generator().manual_seed(seed)
    classes = targets.unique()
    picks = []
    for c in classes:
        idx = torch.nonzero(targets == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    n = min(len(p) for p in picks)
    return torch.stack([p[:n] for p in picks], 1).flatten()  # class-interleaved


def held_out_indices(targets: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a seeded random ``fraction`` of each class (rounded; at least one image of a
    class of two or more, never all of it): a class-balanced held-out split. Each class draws from its
    own generator, so adding images to one class leaves the other classes' draws as they were.

    Example:
        >>> targets = torch.tensor([0] * 10 + [1] * 5 + [2])  # class 2's one image stays for training
        >>> targets[held_out_indices(targets, 0.2)].tolist()
        [0, 0, 1]
    """
    picks = []
    for c in targets.unique().tolist():
        idx = torch.nonzero(targets == c).flatten()
        count = min(len(idx) - 1, max(1, round(len(idx) * fraction)))
        g = torch.Generator().manual_seed(seed * 100_003 + int(c))
        picks.append(idx[torch.randperm(len(idx), generator=g)[:count]])
    return torch.cat(picks).sort().values


def balanced_subset(data: Dataset, images: int | None, seed: int = 0) -> Dataset:
    """A class-balanced random subset of about ``images`` images (the whole set when None or larger)."""
    if images is None or images >= len(data):
        return data
    targets = dataset_targets(data)
    per_class = max(1, images // len(targets.unique()))
    return IndexedSubset(data, balanced_indices(targets, per_class, seed))


__all__ = ["IndexedSubset", "balanced_indices", "balanced_subset", "held_out_indices"]
