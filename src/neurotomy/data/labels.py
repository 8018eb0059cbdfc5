"""A dataset's labels, whatever kind of dataset it is, and the check that they are class indices.

neurotomy's own datasets carry every label as ``data.targets``; a plain ``torch.utils.data.TensorDataset``,
a ``Subset`` or a list of ``(image, label)`` pairs do not. :func:`dataset_targets` is the one way code
reads all the labels of a dataset: the ``targets`` attribute, the label tensor of a ``TensorDataset``,
a subset's rows of its parent's labels, or else ``data[i][1]`` of every item. :func:`known_targets` is
its cheap half (None where only reading every item would tell), for checks that must not read the data.

:func:`check_labels` says in one line what is wrong with labels a model cannot have (an empty set,
float or one-hot labels, a negative label, a label past the last class) before they reach torch,
where they become an index error deep in a loss or a ``bincount``.

Example:
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.zeros(3, 1, 4, 4), torch.tensor([2, 0, 1]))
    >>> dataset_targets(data).tolist(), dataset_targets([(torch.zeros(1, 4, 4), 1)]).tolist()
    ([2, 0, 1], [1])
    >>> check_labels(torch.tensor([0, -1]), num_classes=10)
    Traceback (most recent call last):
    ...
    neurotomy.errors.DataError: the data has label -1; labels are class indices, 0 for the first class
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

from neurotomy.errors import DataError


def known_targets(data: Dataset) -> torch.Tensor | None:
    """Every label of ``data`` where it is at hand without reading the items: ``data.targets``, a
    ``TensorDataset``'s second tensor, a subset's rows of its parent's; None otherwise."""
    targets = getattr(data, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets)
    if isinstance(data, TensorDataset) and len(data.tensors) >= 2:
        return data.tensors[1]
    parent, rows = getattr(data, "dataset", None), getattr(data, "indices", None)  # torch's Subset, ours
    if parent is not None and rows is not None:
        labels = known_targets(parent)
        return None if labels is None else labels[torch.as_tensor(rows, dtype=torch.long)]
    return None


def dataset_targets(data: Dataset) -> torch.Tensor:
    """Every label of ``data``, in order: :func:`known_targets`, else ``data[i][1]`` of every item
    (which reads every image: done once, by the code that needs all the labels)."""
    targets = known_targets(data)
    if targets is not None:
        return targets
    try:
        labels = [torch.as_tensor(data[i][1]) for i in range(len(data))]
    except (TypeError, IndexError, KeyError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot read the labels of a {type(data).__name__} ({exc}); give a dataset whose items "
                        "are (image, label) pairs, or one with a `targets` tensor") from None
    return torch.stack(labels) if labels else torch.zeros(0, dtype=torch.long)


def class_count(data: Dataset, targets: torch.Tensor | None = None) -> int:
    """How many classes ``data`` has: its ``classes`` list, else its largest label + 1."""
    classes = getattr(data, "classes", None)
    if classes:
        return len(classes)
    targets = dataset_targets(data) if targets is None else targets
    return int(targets.max()) + 1 if len(targets) else 0


def check_labels(labels: torch.Tensor, num_classes: int | None = None) -> None:
    """Raise a one-line :class:`DataError` unless ``labels`` are one integer class index per image,
    each in ``0 … num_classes − 1`` (without ``num_classes``: non-negative). Cheap: a min and a max."""
    labels = torch.as_tensor(labels)
    if len(labels) == 0:
        raise DataError("the data is empty; give at least one labelled image")
    if labels.dim() != 1:
        raise DataError(f"the labels have shape {tuple(labels.shape)}; give one class index per image "
                        "(labels.argmax(1) for one-hot labels)")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise DataError(f"the labels are {str(labels.dtype).removeprefix('torch.')} numbers; give integer class "
                        "indices (labels.long())")
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise DataError(f"the data has label {low}; labels are class indices, 0 for the first class")
    if num_classes is not None and high >= num_classes:
        raise DataError(f"the data has label {high} but the model has {num_classes} classes (0…{num_classes - 1}); "
                        "give data labelled with the model's classes, or a model trained on this data")


def require_class_images(targets: torch.Tensor, class_index: int) -> None:
    """A one-line :class:`DataError` when no label of ``targets`` is ``class_index``."""
    if not bool((torch.as_tensor(targets) == class_index).any()):
        raise DataError(f"the data has no image of class {class_index}; give data that covers every class")


__all__ = ["check_labels", "class_count", "dataset_targets", "known_targets", "require_class_images"]
