"""Datasets behind one call, :func:`load_dataset`, and one protocol, :class:`ImageDataset`.

Sources (a :class:`~neurotomy.registry.Registry`, :data:`DATASET_SOURCES`; see :func:`dataset_specs`):
    ``digits``             scikit-learn's 8×8 digits, fixed stratified 80/20 split (seed 0).
    ``fashion-mnist``      Zalando's IDX files with their class names and normalisation; the balanced
                           subset shipped in the package (500 train + 200 test per class), or
                           ``root=`` / ``NEUROTOMY_DATA`` for a full copy.
    ``idx:PATH``           any IDX set (``train-``/``t10k-`` or ``test-`` images and labels files); class
                           names from ``PATH/classes.txt`` or ``class_names=``; normalisation measured
                           on its training images.
    ``image-folder:PATH``  one sub-folder per class (``PATH/train`` and ``PATH/test``, or ``PATH`` itself,
                           of which a fixed 20 % of each class is the test split); grey or RGB detected,
                           ``input_size=N`` resizes and centre-crops.
    ``torchvision:NAME``   a torchvision dataset already under ``root`` (never downloads).

Every dataset offers ``len``, ``data[i] → (image, label)``, ``targets``, ``classes``,
``normalization``, ``name`` and ``subset(indices)`` (:mod:`neurotomy.data.dataset`); images as
tensors come from :func:`batch_at` or :func:`~neurotomy.data.batches.iterate_batches`.

Example:
    >>> ds = load_dataset("digits", split="test")
    >>> ds.classes[:3], tuple(ds[0][0].shape), ds.flip_safe
    (['0', '1', '2'], (1, 8, 8), False)
"""

from __future__ import annotations

# Each source module registers itself in DATASET_SOURCES when imported; the order is the listing's.
from neurotomy.data import digits, fashion_mnist, idx_sets, folders  # noqa: F401  (registration)
from neurotomy.data.dataset import ImageDataset, batch_at, in_memory
from neurotomy.data.labels import check_labels, dataset_targets
from neurotomy.data.sources import DATASET_SOURCES, SPLITS, dataset_source, dataset_specs, load_dataset
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset

DATASETS = tuple(dataset_specs())
"""How each registered source is written (``digits``, ``idx:PATH`` …), for help texts."""

__all__ = ["DATASETS", "DATASET_SOURCES", "ImageDataset", "Normalization", "SPLITS", "TensorImageDataset",
           "batch_at", "check_labels", "dataset_source", "dataset_specs", "dataset_targets", "in_memory",
           "load_dataset"]
