"""Iterate a dataset in batches: slices for in-memory datasets, a DataLoader otherwise."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from neurotomy.data.tensor_dataset import TensorImageDataset


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    max_images: int | None = None,
    workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, targets); shuffling draws only from ``generator`` so seeds reproduce.

    Example:
        >>> from neurotomy.data import load_dataset
        >>> x, y = next(iterate_batches(load_dataset("digits", split="test"), 32))
        >>> tuple(x.shape)
        (32, 1, 8, 8)
    """
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    order = torch.randperm(len(dataset), generator=generator)[:n] if shuffle else torch.arange(n)
    if isinstance(dataset, TensorImageDataset):
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield dataset.images[idx], dataset.targets[idx]
        return
    sampler = order.tolist()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    for images, targets in loader:
        yield images, torch.as_tensor(targets)


def num_batches(dataset: Dataset, batch_size: int, max_images: int | None = None) -> int:
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    return (n + batch_size - 1) // batch_size
