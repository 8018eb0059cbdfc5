"""Train a new model from an architecture name and a dataset name: the job behind ``neurotomy train``.
"""

from __future__ import annotations

import time

from torch import nn

from neurotomy.checkpoint import ModelMeta
from neurotomy.data import load_dataset
from neurotomy.models import build_model
from neurotomy.train import TrainConfig, evaluate, fit, seed_everything


def train_new_model(arch: str, data_name: str, root: str | None, config: TrainConfig,
                    **arch_kwargs) -> nn.Module:
    """Build ``arch`` for the dataset's shape, train it from ``config.seed``, evaluate on the test
    split; the result carries a :class:`~neurotomy.checkpoint.ModelMeta` ready to save.

    Example:
        >>> model = train_new_model("lenet5", "digits", None, TrainConfig(epochs=1, quiet=True))
        >>> sorted(model.neurotomy_meta.metrics)
        ['test', 'train_history', 'train_seconds']
    """
    train_data = load_dataset(data_name, root=root, split="train")
    test_data = load_dataset(data_name, root=root, split="test")
    channels, size, _ = train_data[0][0].shape
    arch_args = {"in_channels": int(channels), "num_classes": len(train_data.classes),
                 "input_size": int(size), **arch_kwargs}
    seed_everything(config.seed)
    model = build_model(arch, **arch_args)
    start = time.perf_counter()
    history = fit(model, train_data, config)
    seconds = time.perf_counter() - start
    test_metrics = evaluate(model, test_data, quiet=config.quiet)
    model.neurotomy_meta = ModelMeta(
        arch=arch, arch_args=arch_args, dataset=data_name,
        normalization=train_data.normalization.to_dict(), classes=list(train_data.classes),
        metrics={"test": {k: test_metrics[k] for k in ("accuracy", "n")},
                 "train_history": history, "train_seconds": round(seconds, 1)},
        seed=config.seed, train_config=config.to_dict(),
    )
    return model
