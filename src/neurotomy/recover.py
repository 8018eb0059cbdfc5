"""Recovering accuracy after a cut: BatchNorm recalibration and fine-tuning.

BatchNorm recalibration: removing channels shifts the statistics every later BatchNorm sees, so
the running means/variances learned before the cut are wrong. Re-estimating them on a few thousand
training images (forward passes only, weights untouched) recovers much of the accuracy in seconds.

Example:
    >>> from neurotomy.data import load_dataset
    >>> from neurotomy.models import build_model
    >>> model = build_model("resnet20", 1, 10, 8)
    >>> recalibrate_batchnorm(model, load_dataset("digits"), images=256, quiet=True)
    256
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.device import model_device, to_device
from neurotomy.models.anatomy import eval_mode
from neurotomy.progress import add_task, progress_bar
from neurotomy.train import TrainConfig, fit
from neurotomy.run_state import RunState

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: Dataset, images: int = 4096, batch_size: int = 256,
                          seed: int = 0, quiet: bool = False) -> int:
    """Re-estimate every BatchNorm's running statistics as an exact average over ``images``
    training images (momentum=None → cumulative mean); returns how many images were used."""
    images = validate.positive_int(images, "images")  # 0 would reset every statistic and measure none
    batch_size = validate.positive_int(batch_size, "batch_size")
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        return 0
    saved = {m: m.momentum for m in bns}
    used = 0
    generator = torch.Generator().manual_seed(seed)
    with eval_mode(model):  # dropout off; only the BatchNorms run in training mode, to collect statistics
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        try:
            with progress_bar(quiet) as bar:
                task = add_task(bar, "recalibrate BN", num_batches(data, batch_size, images))
                where = model_device(model)
                for x, _ in iterate_batches(data, batch_size, shuffle=True, generator=generator, max_images=images):
                    model(to_device(where, x))
                    used += len(x)
                    bar.advance(task)
        finally:
            for m, momentum in saved.items():
                m.momentum = momentum
    return used


def finetune(model: nn.Module, data: Dataset, epochs: int, lr: float = 0.01, batch_size: int = 128,
             seed: int = 0, teacher: nn.Module | None = None, quiet: bool = False,
             max_images: int | None = None, on_epoch_end=None, state: RunState | None = None,
             state_key: str = "finetune", distill_temperature: float = 2.0,
             distill_alpha: float = 0.9) -> list[dict]:
    """Fine-tune in place with SGD + cosine decay from ``lr``; with ``teacher``, distil from it
    (Hinton et al. 2015: KL at ``distill_temperature``, weight ``distill_alpha``, plus the hard-label
    loss at weight 1 − ``distill_alpha``; T 2 and 0.9 lost least at −85 % MACs over 5 seeds, see
    benchmarks/results/pruning_budget_recipes). With ``state``, each epoch is saved under ``state_key`` and
    an interrupted fine-tune continues from it.

    Example::

        finetune(pruned, train, epochs=3, teacher=original)
    """
    epochs = validate.non_negative_int(epochs, "epochs")
    lr = validate.positive_float(lr, "lr")
    if epochs == 0:
        return []
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, schedule="cosine",
                         quiet=quiet, max_images=max_images, distill_temperature=distill_temperature,
                         distill_alpha=distill_alpha)
    return fit(model, data, config, teacher=teacher, on_epoch_end=on_epoch_end, description="fine-tune",
               state=state, state_key=state_key)
