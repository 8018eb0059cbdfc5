"""Train a new model from an architecture name and a dataset name: the job behind ``neurotomy train``.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch import nn

from neurotomy.checkpoint import ModelMeta
from neurotomy.data import load_dataset
from neurotomy.device import place
from neurotomy.errors import DataError
from neurotomy.loading import build_fresh, check_classifier_output, check_compatible
from neurotomy.train import TrainConfig, default_learning_rate, evaluate, fit, seed_everything
from neurotomy.run_state import RunState


def train_new_model(arch: str, data_name: str, root: str | None, config: TrainConfig,
                    data_options: dict | None = None, state: RunState | None = None,
                    device: str | torch.device | None = None, teacher: nn.Module | None = None,
                    **arch_kwargs) -> nn.Module:
    """Build ``arch`` for the dataset's shape, train it from ``config.seed``, evaluate on the test
    split; the result carries a :class:`~neurotomy.checkpoint.ModelMeta` ready to save, recording
    the dataset as it reloads (name, absolute root, ``data_options`` such as ``class_names`` and
    ``input_size``), its class names and its normalisation. ``config.lr`` None: the model's
    :func:`~neurotomy.train.default_learning_rate`. With ``state``, training resumes where an
    interrupted run with the same settings stopped (:class:`~neurotomy.run_state.RunState`). With
    ``teacher``, the model also learns the teacher's softened outputs (knowledge distillation).

    Example:
        >>> model = train_new_model("lenet5", "digits", None, TrainConfig(epochs=1, quiet=True))
        >>> sorted(model.neurotomy_meta.metrics)
        ['test', 'train_history', 'train_seconds']
    """
    train_data = load_dataset(data_name, root=root, split="train", **(data_options or {}))
    test_data = load_dataset(data_name, root=root, split="test", **(data_options or {}))
    channels, size, width = train_data[0][0].shape
    if size != width:
        raise DataError(f"{train_data.name}: images are {size}×{width}; the architectures take square images, "
                        "so resize them (--input-size N, input_size=N)")
    if len(train_data.classes) < 2:
        raise DataError(f"{train_data.name}: the data has one class ({', '.join(map(str, train_data.classes))}); a "
                        "classifier needs at least two (add a folder, or the labels, of another class)")
    arch_args = {"in_channels": int(channels), "num_classes": len(train_data.classes),
                 "input_size": int(size), **arch_kwargs}
    seed_everything(config.seed)
    model = place(build_fresh(arch, **arch_args), device)  # device None: the CPU, where it is built
    check_classifier_output(model, arch)  # before any epoch: a forward that returns no N × classes logits
    if teacher is not None:
        check_compatible(model, teacher, arch, f"the teacher ({teacher.neurotomy_meta.arch})")
    if config.lr is None:
        config = replace(config, lr=default_learning_rate(model, config.optimizer))
    if state is not None:
        state.expect({"job": "train", "arch": arch, "data": data_name, "root": root, "data_options": data_options,
                      "arch_args": arch_args, "config": config.settings(),
                      "teacher": None if teacher is None else teacher.neurotomy_meta.arch})
    start = time.perf_counter()
    history = fit(model, train_data, config, teacher=teacher, state=state)
    seconds = time.perf_counter() - start
    test_metrics = evaluate(model, test_data, quiet=config.quiet)
    model.neurotomy_meta = ModelMeta(
        arch=model.neurotomy_meta.arch, arch_args=model.neurotomy_meta.arch_args,  # as built: file specs by path + SHA-256
        dataset=train_data.name, dataset_root=train_data.root,
        dataset_options=dict(train_data.options),
        normalization=train_data.normalization.to_dict(), classes=list(train_data.classes),
        metrics={"test": {k: test_metrics[k] for k in ("accuracy", "n")},
                 "train_history": history, "train_seconds": round(seconds, 1)},
        seed=config.seed, train_config=config.to_dict(),
    )
    return model
