"""The pure parts of RemOve And Retrain, ROAR (Hooker et al., NeurIPS 2019, §3): rank every pixel
of every image by a method's map, and replace the top-t pixels by the dataset mean.

Deleting pixels from a test image also moves it off the training distribution, so a probability
drop may measure the shift rather than the information removed. ROAR retrains instead: for each
method and threshold t, the top-t pixels of *every* train and test image (ranked by the method's map
of the original trained model) are replaced by the per-channel dataset mean, a fresh model is
trained with the same recipe, and its test accuracy is recorded. The retraining loop is a job
(:func:`neurotomy.jobs.roar.roar`): nothing on this floor trains.

Example:
    >>> import torch
    >>> from neurotomy.data import Normalization, TensorImageDataset
    >>> data = TensorImageDataset(torch.arange(8.0).view(2, 1, 2, 2), torch.tensor([0, 1]), ["a", "b"],
    ...                           Normalization((0.0,), (1.0,)))
    >>> ranks = pixel_ranks(None, data, lambda model, x, t: x[:, 0], quiet=True)
    >>> ranks.tolist()
    [[3, 2, 1, 0], [3, 2, 1, 0]]
    >>> remove_top_pixels(data, ranks, 0.5, torch.tensor([-1.0])).images[0, 0].tolist()
    [[0.0, 1.0], [-1.0, -1.0]]
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.device import model_device, to_device
from neurotomy.data.dataset import in_memory
from neurotomy.data.tensor_dataset import TensorImageDataset
from neurotomy.explain.metrics.checks import Explainer, MetricError, descending_ranks, explain
from neurotomy.explain.metrics.controls import random_map, sobel_map
from neurotomy.progress import add_task, progress_bar
from neurotomy.registry import Registry

THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)

ROAR_TARGETS: Registry = Registry("ROAR target", error=MetricError)
"""Which class each image is explained for: ``(model, images, labels) -> classes``."""


@ROAR_TARGETS.register("label")
def true_labels(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each image's true class."""
    return labels


@ROAR_TARGETS.register("predicted")
def predicted_labels(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The class the model predicts for each image."""
    with torch.no_grad():
        return model(to_device(model_device(model), images)).argmax(1).cpu()


def control_explainers(seed: int = 0) -> dict[str, Explainer]:
    """The two model-blind controls as explainers: fresh random maps per call (reproducible from
    ``seed``) and Sobel edges."""
    generator = torch.Generator().manual_seed(seed)
    return {"random": lambda model, inputs, targets: random_map(inputs, generator=generator),
            "sobel": lambda model, inputs, targets: sobel_map(inputs)}


def pixel_ranks(model: nn.Module, data: Dataset, explainer: Explainer, batch_size: int = 128,
                targets: str = "label", description: str = "maps", quiet: bool | None = None) -> torch.Tensor:
    """``N × HW`` rank of every pixel of every image (0 = most relevant) by the explainer's map of
    ``model``; ``targets`` is one of :data:`ROAR_TARGETS`: ``"label"`` explains each image's true
    class, ``"predicted"`` the model's."""
    classes_of = ROAR_TARGETS.get(targets)
    ranks = []
    with progress_bar(quiet) as bar:
        task = add_task(bar, description, num_batches(data, batch_size))
        for images, labels in iterate_batches(data, batch_size):
            maps = explain(explainer, model, images, classes_of(model, images, labels))
            ranks.append(descending_ranks(maps).to(torch.int32).cpu())
            bar.advance(task)
    return torch.cat(ranks)


def remove_top_pixels(data: Dataset, ranks: torch.Tensor, threshold: float,
                      fill: torch.Tensor) -> TensorImageDataset:
    """A copy of ``data`` (any dataset, brought into memory) whose top-``threshold`` pixels (all
    channels) hold ``fill`` (per channel)."""
    data = in_memory(data)
    n, channels, height, width = data.images.shape
    count = int(round(threshold * height * width))
    removed = (ranks < count).view(n, 1, height, width)
    images = torch.where(removed, fill.view(1, channels, 1, 1).to(data.images), data.images)
    return TensorImageDataset(images, data.targets, data.classes, data.normalization, data.name,
                              root=data.root, options=data.options, flip_safe=data.flip_safe)
