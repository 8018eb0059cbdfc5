"""RemOve And Retrain, ROAR (Hooker et al., NeurIPS 2019, §3): the retraining loop.

For each method and threshold t, the top-t pixels of *every* train and test image (ranked by the
method's map of the original trained model, :func:`neurotomy.explain.metrics.roar.pixel_ranks`)
are replaced by the per-channel dataset mean, a fresh model is trained with the same recipe, and
its test accuracy is recorded. The better the map, the more the accuracy falls; a uniformly random
map is the control to beat (§4), and the Sobel edge map a model-blind one. This is expensive — each
point is a training run — so on 2 CPU cores use a small architecture and a subset, and say so.

Example:
    >>> import torch
    >>> from neurotomy.data import Normalization, TensorImageDataset
    >>> from neurotomy.models import build_model
    >>> from neurotomy.train import TrainConfig
    >>> g = torch.Generator().manual_seed(0)
    >>> data = TensorImageDataset(torch.randn(32, 1, 8, 8, generator=g), torch.arange(32) % 2, ["a", "b"],
    ...                           Normalization((0.0,), (1.0,)))
    >>> model = build_model("lenet5", 1, 2, 8).eval()
    >>> record = roar(model, data, data, {}, thresholds=(0.5,), quiet=True,
    ...               train_config=TrainConfig(epochs=1, batch_size=16, augment="none"))
    >>> sorted(record["accuracy"]), len(record["accuracy"]["random"])
    (['random', 'sobel'], 1)
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Callable, Mapping, Sequence

from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.dataset import in_memory
from neurotomy.data.tensor_dataset import TensorImageDataset
from neurotomy.explain.metrics.checks import Explainer, MetricError, check_fraction
from neurotomy.explain.metrics.roar import (ROAR_TARGETS, THRESHOLDS, control_explainers, pixel_ranks,
                                            remove_top_pixels)
from neurotomy.models import build_model
from neurotomy.progress import add_task, progress_bar
from neurotomy.train import TrainConfig, evaluate, fit, seed_everything


def _retrain(arch: str, train: TensorImageDataset, test: TensorImageDataset, config: TrainConfig) -> float:
    """Test accuracy of a fresh ``arch`` trained on ``train`` with ``config`` (same init every time)."""
    channels, size, _ = train.input_shape
    seed_everything(config.seed)
    model = build_model(arch, in_channels=channels, num_classes=len(train.classes), input_size=size)
    fit(model, train, config)
    return float(evaluate(model, test, quiet=True)["accuracy"])


def roar(model: nn.Module, train_data: Dataset, test_data: Dataset, explainers: Mapping[str, Explainer],
         thresholds: Sequence[float] = THRESHOLDS, arch: str = "lenet5", train_config: TrainConfig | None = None,
         controls: bool = True, targets: str = "label", seed: int = 0, batch_size: int = 128,
         quiet: bool | None = None, on_result: Callable[[dict], None] | None = None) -> dict:
    """ROAR accuracy curves for each explainer (plus ``random`` and ``sobel`` when ``controls``).

    Maps of train and test images come from ``model`` (the original trained model, explained on a
    copy in eval mode); each retrained model is ``arch`` trained with ``train_config``
    (a :class:`~neurotomy.train.TrainConfig`; its seed is set to ``seed``), from the same
    initialisation. The default recipe — 10 epochs, lr 0.05, batch 64, no augmentation — is sized for
    a LeNet-5 on a few thousand Fashion-MNIST images on 2 CPU cores (seconds per retraining).
    ``on_result(record)`` is called after each retraining so a caller can save partial results.
    Returns a JSON-able record: ``thresholds``, ``baseline_accuracy`` (retrained on unmodified
    images), ``accuracy`` (method → one accuracy per threshold), ``arch``, ``train_config``,
    ``n_train``, ``n_test``, ``fill``, ``targets``, ``seconds``.
    """
    thresholds = [check_fraction(t, "threshold") for t in thresholds]
    ROAR_TARGETS.get(targets)
    if train_config is None:
        train_config = TrainConfig(epochs=10, lr=0.05, batch_size=64, augment="none")
    config = replace(train_config, seed=seed, quiet=True)
    methods = dict(explainers)
    if controls:
        methods = {**methods, **{k: v for k, v in control_explainers(seed).items() if k not in methods}}
    if not methods:
        raise MetricError("no explainers to evaluate; give at least one or keep controls=True")
    train, test = in_memory(train_data), in_memory(test_data)  # ROAR rewrites every image
    # Hooker et al. §3: removed pixels take the per-channel mean of the (unmodified) training set.
    fill = train.images.mean(dim=(0, 2, 3))
    original = copy.deepcopy(model).eval()
    start = time.perf_counter()
    record = {"thresholds": thresholds, "arch": arch, "train_config": config.to_dict(), "targets": targets,
              "n_train": len(train), "n_test": len(test), "fill": fill.tolist(), "seed": seed,
              "baseline_accuracy": None, "accuracy": {name: [] for name in methods}, "seconds": 0.0}
    with progress_bar(quiet) as bar:
        task = add_task(bar, "roar retrain", 1 + len(methods) * len(thresholds))
        record["baseline_accuracy"] = _retrain(arch, train, test, config)
        bar.advance(task)
        _report(record, start, on_result)
        for name, explainer in methods.items():
            train_ranks = pixel_ranks(original, train, explainer, batch_size, targets, quiet=True)
            test_ranks = pixel_ranks(original, test, explainer, batch_size, targets, quiet=True)
            for threshold in thresholds:
                bar.update(task, info=f"{name} t={threshold:.0%}")
                accuracy = _retrain(arch, remove_top_pixels(train, train_ranks, threshold, fill),
                                    remove_top_pixels(test, test_ranks, threshold, fill), config)
                record["accuracy"][name].append(accuracy)
                bar.advance(task)
                _report(record, start, on_result)
    return record


def _report(record: dict, start: float, on_result: Callable[[dict], None] | None) -> None:
    record["seconds"] = round(time.perf_counter() - start, 1)
    if on_result is not None:
        on_result(copy.deepcopy(record))
