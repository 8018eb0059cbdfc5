"""Iterate a dataset in batches: slices for in-memory datasets, a DataLoader otherwise.

Memory is bounded by one batch whatever the dataset's length: only the index order (one integer
per image) is held for the whole pass. ``workers`` (the CLI's ``--workers``) sets how many
DataLoader worker processes read images for datasets that are not in memory (image folders,
torchvision); in-memory datasets are sliced directly, where workers would only add copies.

Several processes (see :mod:`neurotomy.distributed`) draw the *same* global order from the same
seeded generator and each reads its ``shard`` of it, so a run over N processes sees exactly the
images one process would.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from neurotomy.data.tensor_dataset import TensorImageDataset
from neurotomy.errors import DataError

_defaults = {"workers": 0}


def set_default_workers(workers: int) -> None:
    """DataLoader workers used when a caller does not pass ``workers`` (the CLI's ``--workers``)."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    _defaults["workers"] = int(workers)


def shard_rows(n: int, index: int, count: int) -> slice:
    """Rows of a batch of ``n`` that process ``index`` of ``count`` takes: contiguous, sizes
    differing by at most one, in process order (so concatenating the shards restores the batch).

    Example:
        >>> [shard_rows(5, i, 2) for i in range(2)]
        [slice(0, 3, None), slice(3, 5, None)]
    """
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    return slice(start, start + base + (1 if index < extra else 0))


def global_batches(dataset: Dataset, batch_size: int, shuffle: bool = False,
                   generator: torch.Generator | None = None, max_images: int | None = None) -> list[torch.Tensor]:
    """Index tensors of every batch of one pass, in order; shuffling draws only from ``generator``."""
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    order = torch.randperm(len(dataset), generator=generator)[:n] if shuffle else torch.arange(n)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


def select_shard(batches: list[torch.Tensor], shard: tuple[int, int] | None,
                 split_batches: bool = False) -> list[torch.Tensor]:
    """This process's part of the global batches.

    ``split_batches=True`` (data-parallel training: every step is one global batch) keeps its rows
    of each batch, dropping a last batch smaller than the process count, which cannot be split;
    otherwise (probing: every statistic is a sum over images) it keeps every ``count``-th whole
    batch, so each batch is computed exactly as one process computes it.
    """
    if shard is None:
        return batches
    index, count = shard
    if split_batches:
        return [b[shard_rows(len(b), index, count)] for b in batches if len(b) >= count]
    return batches[index::count]


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    max_images: int | None = None,
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    split_batches: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, targets); ``shard=(index, count)`` yields only one process's part (see
    :func:`select_shard`).

    Example:
        >>> from neurotomy.data import load_dataset
        >>> x, y = next(iterate_batches(load_dataset("digits", split="test"), 32))
        >>> tuple(x.shape)
        (32, 1, 8, 8)
    """
    batches = select_shard(global_batches(dataset, batch_size, shuffle, generator, max_images), shard,
                           split_batches)
    if isinstance(dataset, TensorImageDataset):
        for idx in batches:
            yield dataset.images[idx], dataset.targets[idx]
        return
    workers = _defaults["workers"] if workers is None else workers
    loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], num_workers=workers)
    try:
        for images, targets in loader:
            yield images, torch.as_tensor(targets)
    except DataError as exc:  # from a worker process, torch wraps the message in the worker's traceback
        raise DataError(worker_error_message(str(exc))) from None


def worker_error_message(message: str) -> str:
    """A :class:`DataError`'s own message out of the text a DataLoader worker re-raises it with (the
    worker's whole traceback); any other message as it is.

    Example:
        >>> worker_error_message("Caught DataError in DataLoader worker process 0.\\nOriginal Traceback ...\\n"
        ...                      "neurotomy.errors.DataError: a.png: not a readable image\\n")
        'a.png: not a readable image'
    """
    if not message.startswith("Caught DataError"):
        return message
    lines = [line for line in message.splitlines() if "DataError: " in line]
    return lines[-1].split("DataError: ", 1)[1].strip() if lines else message


def num_batches(dataset: Dataset, batch_size: int, max_images: int | None = None) -> int:
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    return (n + batch_size - 1) // batch_size


def batch_sizes(dataset: Dataset, batch_size: int, max_images: int | None = None) -> list[int]:
    """Size of every global batch of one pass (the last one may be short)."""
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    return [min(batch_size, n - start) for start in range(0, n, batch_size)]
