"""The one dataset protocol every command, job and metric relies on.

Whatever a dataset's source (:func:`neurotomy.data.load_dataset`: digits, an IDX set, an image
folder, a torchvision dataset) it offers the same things:

==================  ==================================================================================
``len(data)``       the number of images
``data[i]``         ``(image, label)``: a normalised float tensor (C, H, W) and an integer class index
``data.targets``    every label, a LongTensor (N,)
``data.classes``    class names, ``list[str]``; ``data.classes[label]`` names a label
``data.normalization``  the per-channel mean/std the images were normalised with
``data.name``       the name :func:`~neurotomy.data.load_dataset` reloads it by (paths absolute)
``data.subset(i)``  the images at indices ``i``, as a dataset of the same kind
``data.with_normalization(n)``  the same images normalised with ``n`` (a trained model's own)
==================  ==================================================================================

and, optionally, ``root`` (the absolute directory it was read from, or None for built-in data),
``options`` (the keyword options it was loaded with) and ``flip_safe`` (whether mirroring an image
keeps its label, see :func:`neurotomy.train.fit`'s ``augment="auto"``).

Code that needs images as tensors goes through :func:`batch_at` (some rows) or
:func:`neurotomy.data.batches.iterate_batches` (all, in batches), never through an attribute of
one implementation such as :class:`~neurotomy.data.tensor_dataset.TensorImageDataset`'s ``images``.
Code that needs every label goes through :func:`neurotomy.data.labels.dataset_targets`, never
``data.targets`` itself: the API also takes plain datasets (a ``TensorDataset``, a list of pairs).

Example:
    >>> from neurotomy.data import load_dataset
    >>> data = load_dataset("digits", split="test")
    >>> isinstance(data, ImageDataset)
    True
    >>> images, labels = batch_at(data, [0, 5])
    >>> tuple(images.shape), labels.tolist() == data.targets[[0, 5]].tolist()
    ((2, 1, 8, 8), True)
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.data.subsets import IndexedSubset
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset


@runtime_checkable
class ImageDataset(Protocol):
    """What every dataset offers (see the module's table)."""

    name: str
    classes: list[str]
    normalization: Normalization
    targets: torch.Tensor

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | torch.Tensor]: ...

    def subset(self, indices: torch.Tensor) -> "ImageDataset": ...

    def with_normalization(self, normalization: Normalization) -> "ImageDataset": ...


def batch_at(data: Dataset, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (N, C, H, W) and labels (N,) at ``indices``, read the fastest way ``data`` allows."""
    indices = torch.as_tensor(indices, dtype=torch.long).flatten()
    if len(indices) == 0:
        raise ValueError("no indices: nothing to read")
    return next(iterate_batches(IndexedSubset(data, indices), len(indices)))


def in_memory(data: Dataset) -> TensorImageDataset:
    """``data`` as one in-memory :class:`TensorImageDataset` (itself, if it is one already); for
    jobs that rewrite or re-slice every image (ROAR, one-vs-rest sets)."""
    if isinstance(data, TensorImageDataset):
        return data
    images, targets = zip(*iterate_batches(data, 256))
    images, targets = torch.cat(images), torch.cat(targets).long()
    classes = list(getattr(data, "classes", None) or [str(c) for c in range(int(targets.max()) + 1)])
    normalization = getattr(data, "normalization", None) or Normalization.identity(images.shape[1])
    return TensorImageDataset(images, targets, classes, normalization, getattr(data, "name", ""),
                              root=getattr(data, "root", None), options=getattr(data, "options", None),
                              flip_safe=getattr(data, "flip_safe", False))


__all__ = ["ImageDataset", "batch_at", "in_memory"]
