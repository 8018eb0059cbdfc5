"""Fit, fine-tune (optionally distilling from a teacher) and evaluate classifiers.

SGD with momentum under a one-cycle or cosine schedule, light augmentation (crop + flip), a
progress bar showing loss and accuracy. Every random draw (init, shuffling, augmentation) comes
from ``seed``, so the same seed gives bit-identical weights on the same machine.

Training that tells you: a loss that becomes NaN/inf or grows tenfold stops the run with a one-line
:class:`~neurotomy.errors.TrainingError` naming a lower ``--lr`` (:class:`LossWatch`); with no ``lr``
given, neurotomy's own architectures start at 0.1 and any other model (torchvision, timm, your own)
at 0.01 (:func:`default_learning_rate`).

Long jobs survive interruption: a :class:`RunState` is one file next to a job's output that ``fit``
updates after every epoch (model, optimizer, scheduler, every RNG state, the epoch reached) and a job
after every stage (its result); ``fit`` given a state that holds its key continues from the saved
epoch, so a run killed at any moment and resumed ends with the very weights of an uninterrupted one.

Example:
    >>> from neurotomy.data import load_dataset
    >>> from neurotomy.models import build_model
    >>> data = load_dataset("digits")
    >>> _ = seed_everything(0); model = build_model("lenet5", 1, 10, 8)
    >>> history = fit(model, data, TrainConfig(epochs=1, lr=0.05, quiet=True))
    >>> 0.0 <= evaluate(model, load_dataset("digits", split="test"), quiet=True)["accuracy"] <= 1.0
    True
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.augment import random_crop_flip
from neurotomy.data.batches import batch_sizes, iterate_batches, num_batches
from neurotomy.data.labels import check_labels
from neurotomy.device import model_device, place, to_device
from neurotomy.distributed import data_parallel, sum_over_processes
from neurotomy.errors import ModelError, TrainingError
from neurotomy import validate
from neurotomy.grad_mask import GradMaskConfig, training_mask
from neurotomy.models.anatomy import eval_mode
from neurotomy.models.data_fit import check_data_runs, check_images_fit, check_known_labels, training_data_of
from neurotomy.progress import add_task, progress_bar
from neurotomy.run_state import RunState, fit_fingerprint


SCHEDULES = ("onecycle", "cosine", "constant")
"""Learning-rate schedules ``fit`` knows (one-cycle: Smith 2018)."""
AUGMENTATIONS = ("auto", "crop-flip", "crop", "none")
"""Augmentations ``fit`` knows; ``auto`` crops, and flips only data declared flip-safe (``data.flip_safe``)."""
OPTIMIZERS = ("sgd", "adamw")
# bf16: forward and loss under torch.autocast (weights and optimizer state stay fp32); on CPUs with
# AMX/AVX-512-BF16 it halves a ViT's step time (measured 490 → 250 ms per batch of 128 at 1 thread)
PRECISIONS = ("fp32", "bf16")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for data order and augmentation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit`. ``distill_*`` apply only when a teacher is given."""

    epochs: int = 15
    lr: float | None = None  # None: default_learning_rate(model), 0.1 for ours, 0.01 for any other
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # one of SCHEDULES
    augment: str = "auto"  # one of AUGMENTATIONS; auto: flips only where data.flip_safe
    seed: int = 0
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    optimizer: str = "sgd"  # one of OPTIMIZERS: SGD with Nesterov momentum, or AdamW (transformers)
    label_smoothing: float = 0.0
    precision: str = "fp32"  # one of PRECISIONS
    max_images: int | None = None
    quiet: bool = False
    # Gradient mask (lateral inhibition, arXiv 2208.06918; our rule, see neurotomy.grad_mask).
    grad_mask: bool = False
    grad_mask_rule: str = "mean"  # "mean" | "topq" | "act-grad"
    grad_mask_tau: float = 1.0
    grad_mask_q: float = 0.5
    grad_mask_sites: str = "relu"  # "relu" | "conv" | "pool"

    def __post_init__(self) -> None:
        """Every value checked when the config is made (:mod:`neurotomy.validate`, the CLI's rules too),
        so a bad one fails before any data is read, not as an optimizer's ValueError mid-run."""
        self.epochs = validate.positive_int(self.epochs, "epochs")
        self.lr = None if self.lr is None else validate.positive_float(self.lr, "lr")
        self.batch_size = validate.positive_int(self.batch_size, "batch_size")
        self.momentum = validate.fraction(self.momentum, "momentum", "[0, 1)")
        self.weight_decay = validate.non_negative_float(self.weight_decay, "weight_decay")
        validate.known_name(self.schedule, "schedule", names=SCHEDULES, kind="schedule")
        validate.known_name(self.augment, "augment", names=AUGMENTATIONS, kind="augmentation")
        self.seed = validate.seed(self.seed, "seed")
        self.distill_alpha = validate.fraction(self.distill_alpha, "distill_alpha", "[0, 1]")
        self.distill_temperature = validate.positive_float(self.distill_temperature, "distill_temperature")
        validate.known_name(self.optimizer, "optimizer", names=OPTIMIZERS, kind="optimizer")
        self.label_smoothing = validate.fraction(self.label_smoothing, "label_smoothing", "[0, 1)")
        validate.known_name(self.precision, "precision", names=PRECISIONS, kind="precision")
        if self.max_images is not None:
            self.max_images = validate.positive_int(self.max_images, "max_images")
        GradMaskConfig(self.grad_mask_rule, self.grad_mask_tau, self.grad_mask_q, self.grad_mask_sites)

    def to_dict(self) -> dict:
        return asdict(self)

    def settings(self) -> dict:
        """What decides the weights: every field but ``quiet`` (a resumed run must match these)."""
        return {k: v for k, v in self.to_dict().items() if k != "quiet"}


OUR_LR, OTHER_LR, ADAMW_LR = 0.1, 0.01, 1e-3


def default_learning_rate(model: nn.Module, optimizer: str = "sgd") -> float:
    """SGD: 0.1 for neurotomy's own architectures (tuned for them: BatchNorm, small inputs), 0.01
    for every other model: torchvision's and timm's ImageNet networks trained from scratch on a
    small set diverge at 0.1 (logits of 1e13 were seen with ResNet-18), and 0.01 is their usual SGD
    rate. AdamW: 1e-3 for every model (the usual rate for a ViT at batch 128-512).

    Example:
        >>> from neurotomy.models import build_model
        >>> default_learning_rate(build_model("lenet5", 1, 10, 8)), default_learning_rate(nn.Linear(2, 2))
        (0.1, 0.01)
        >>> default_learning_rate(nn.Linear(2, 2), "adamw")
        0.001
    """
    if optimizer == "adamw":
        return ADAMW_LR
    return OUR_LR if type(model).__module__.startswith("neurotomy.models") else OTHER_LR


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names. AdamW leaves biases and norm/embedding vectors
    (every parameter of fewer than 2 dimensions) and the class/position tokens out of weight decay,
    as ViT and DeiT do."""
    if config.optimizer == "adamw":
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            tokens = name.endswith(("cls_token", "pos_embed"))
            (no_decay if parameter.ndim < 2 or tokens else decay).append(parameter)
        return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=True)


EpochHook = Callable[[nn.Module, int], None]


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, lr: float, steps: int):
    if config.schedule == "onecycle":
        if steps < 4:  # too short to warm up and anneal: OneCycleLR divides by zero-length phases
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        # a quarter of the run warming up, but never a phase shorter than one step (runs of 4–5 steps)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                   pct_start=max(0.25, 1.5 / steps))
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"unknown schedule {config.schedule!r}; use onecycle, cosine or constant")


def _augmentation(config: TrainConfig, data: Dataset) -> tuple[bool, bool]:
    """(crop, flip) for this dataset: "auto" mirrors only data whose source declares flips label-safe
    (``data.flip_safe``: clothing yes, digits no, unknown data no)."""
    mode = config.augment
    if mode == "auto":
        mode = "crop-flip" if getattr(data, "flip_safe", False) else "crop"
    if mode not in ("crop-flip", "crop", "none"):
        raise ValueError(f"unknown augmentation {config.augment!r}; use auto, crop-flip, crop or none")
    return mode != "none", mode == "crop-flip"


def _background_value(dataset: Dataset) -> torch.Tensor | float:
    norm = getattr(dataset, "normalization", None)
    if norm is None:
        return 0.0
    return torch.tensor([-m / s for m, s in zip(norm.mean, norm.std)])


def _loss(logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None,
          config: TrainConfig) -> torch.Tensor:
    hard = F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
    if teacher_logits is None:
        return hard
    # Hinton et al. 2015: KL between softened distributions, scaled by T² to keep gradient size.
    t = config.distill_temperature
    soft = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher_logits / t, 1), reduction="batchmean")
    return (1 - config.distill_alpha) * hard + config.distill_alpha * soft * t * t


class LossWatch:
    """Stops training that diverges, with one line that says what to do.

    Diverged: a loss that is NaN or infinite, or a mean over the last :attr:`WINDOW` batches above
    :attr:`FACTOR` × the reference — the first batch's loss, but never less than ln(classes), the
    loss of a uniform guess: a fine-tune starts near zero, where ten times the first loss is noise.

    Example:
        >>> watch = LossWatch(lr=0.5)
        >>> watch.update(2.3, classes=10, epoch=0, step=1)
        >>> try:
        ...     watch.update(float("nan"), classes=10, epoch=0, step=2)
        ... except TrainingError as e:
        ...     print(e)
        training diverged in epoch 1, step 2: the loss is nan; lower the learning rate (now 0.5), e.g. --lr 0.05
    """

    WINDOW = 5
    FACTOR = 10.0

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.first: float | None = None
        self.reference = 0.0
        self.recent: deque[float] = deque(maxlen=self.WINDOW)

    def update(self, loss: float, classes: int, epoch: int, step: int) -> None:
        if not math.isfinite(loss):
            raise TrainingError(self._message(f"the loss is {loss}", epoch, step))
        if self.first is None:
            self.first = loss
            self.reference = max(loss, math.log(max(2, classes)))
        self.recent.append(loss)
        mean = sum(self.recent) / len(self.recent)
        if mean > self.FACTOR * self.reference:
            raise TrainingError(self._message(f"the loss grew to {mean:.3g} from {self.first:.3g} at the first step",
                                              epoch, step))

    def _message(self, what: str, epoch: int, step: int) -> str:
        return (f"training diverged in epoch {epoch + 1}, step {step}: {what}; lower the learning rate "
                f"(now {self.lr:g}), e.g. --lr {self.lr / 10:g}")


def check_teacher(model: nn.Module, teacher: nn.Module, data: Dataset) -> None:
    """Before any step: ``teacher`` must run on ``data``'s images and give logits of the shape ``model``
    gives, or distillation would fail mid-epoch (or, worse, compare logits of other classes). One
    forward of two images through each, in eval mode (BatchNorm statistics untouched); else a
    one-line :class:`~neurotomy.errors.ModelError`."""
    images = torch.stack([data[i][0] for i in range(min(2, len(data)))])
    fix = "give a teacher made for the same inputs and classes as the model"
    outputs = []
    for name, net in (("the model", model), ("the teacher", teacher)):
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                outputs.append(net(images.to(model_device(net))))
        except RuntimeError as exc:
            if name == "the model":
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"the teacher does not run on this data's {tuple(images.shape[1:])} images "
                             f"({first[:160]}); {fix}") from None
        finally:
            net.train(was_training)
    shapes = [tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__ for o in outputs]
    if shapes[0] != shapes[1]:
        raise ModelError(f"the teacher returns {shapes[1]} for 2 images but the model returns {shapes[0]}; {fix}")


def fit(model: nn.Module, data: Dataset, config: TrainConfig, teacher: nn.Module | None = None,
        on_epoch_end: EpochHook | None = None, description: str = "train", state: "RunState | None" = None,
        state_key: str = "fit", device: str | torch.device | None = None) -> list[dict]:
    """Train ``model`` in place; return one ``{"epoch", "loss", "accuracy"}`` record per epoch. The
    model is left in eval mode, ready to evaluate or save (call ``model.train()`` to go on training).

    With ``state`` (a :class:`RunState`), everything the next epoch depends on is saved there under
    ``state_key`` after each epoch, and a state that already holds ``state_key`` is continued from
    its last epoch (the configuration, data and starting weights must be the same, or
    :class:`~neurotomy.errors.ResumeError`). A diverging loss raises
    :class:`~neurotomy.errors.TrainingError` (see :class:`LossWatch`).

    ``device`` (``"cpu"``, ``"cuda"``, ``"mps"``, ``"auto"``) moves ``model`` (and ``teacher``) there
    first; ``None`` trains where the model is. Batches follow the model's device.

    Images the model cannot take and impossible labels (see
    :func:`~neurotomy.models.data_fit.check_data_runs`) are a one-line
    :class:`~neurotomy.errors.DataError` before the first step.
    """
    labels_checked = check_data_runs(model, data)
    classes = None if labels_checked else training_data_of(model).num_classes  # for each batch's labels
    place(model, device)
    if teacher is not None:
        place(teacher, device)
        check_teacher(model, teacher, data)
    where = model_device(model)
    lr = config.lr if config.lr is not None else default_learning_rate(model, config.optimizer)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config, lr)
    per_epoch = num_batches(data, config.batch_size, config.max_images)
    scheduler = _scheduler(optimizer, config, lr, max(1, per_epoch * config.epochs))
    start, history, fingerprint = 0, [], None
    if state is not None:
        fingerprint = fit_fingerprint(model, data, {**config.settings(), "lr": lr}, teacher)
        start, history = state.resume_fit(state_key, fingerprint, model, optimizer, scheduler, generator)
    background = _background_value(data)
    crop, flip = _augmentation(config, data)
    padding = max(1, data[0][0].shape[-1] // 14)  # 2 px on 28 px images, 1 px on 8 px digits
    if teacher is not None:
        teacher.eval()
    watch = LossWatch(lr)
    # Under `accelerate launch`, each process trains on its shard of every global batch (one process:
    # parallel.module is the model and every step below is unchanged); see neurotomy.distributed.
    with progress_bar(config.quiet) as bar, training_mask(model, config), data_parallel(model) as parallel:
        task = add_task(bar, description, per_epoch * config.epochs)
        bar.update(task, advance=start * per_epoch)
        sizes = parallel.step_sizes(batch_sizes(data, config.batch_size, config.max_images))
        for epoch in range(start, config.epochs):
            model.train()
            seen = correct = 0
            total_loss = 0.0
            for step, ((images, targets), global_size) in enumerate(zip(iterate_batches(
                    data, config.batch_size, shuffle=True, generator=generator, max_images=config.max_images,
                    shard=parallel.shard, split_batches=True), sizes), start=1):
                if crop:
                    images = random_crop_flip(images, generator, padding=padding, flip=flip, fill=background,
                                              part=parallel.part(global_size))
                if not labels_checked:  # not at hand before the pass: each batch's, before its forward
                    check_labels(targets, classes)
                images, targets = to_device(where, images, targets)
                with torch.autocast(where.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                    logits = parallel.module(images)
                    teacher_logits = None
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_logits = teacher(images)
                    loss = _loss(logits.float(), targets, None if teacher_logits is None else teacher_logits.float(),
                                 config)
                watch.update(float(loss.detach()), logits.shape[1], epoch, step)
                optimizer.zero_grad(set_to_none=True)
                parallel.loss_for_backward(loss, len(targets), global_size).backward()
                optimizer.step()
                scheduler.step()
                seen += len(targets)
                correct += int((logits.argmax(1) == targets).sum())
                total_loss += float(loss.detach()) * len(targets)
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{config.epochs} "
                           f"loss {total_loss / seen:.3f} acc {correct / seen:.3f}")
            seen, correct, total_loss = sum_over_processes(seen, correct, total_loss)
            if on_epoch_end is not None:
                on_epoch_end(model, epoch)
            history.append({"epoch": epoch + 1, "loss": total_loss / seen, "accuracy": correct / seen})
            if state is not None:
                state.save_fit(state_key, fingerprint, epoch + 1, config.epochs, history, model, optimizer,
                               scheduler, generator)
    model.eval()
    return history


@torch.inference_mode()
def predict(model: nn.Module, data: Dataset, batch_size: int = 256, max_images: int | None = None,
            quiet: bool = False, device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of the whole dataset, in order, on the CPU; computed on ``device`` (the
    model is moved there; ``None``: where the model is) in eval mode, the caller's training flag
    restored afterwards. Images the model cannot take are a one-line
    :class:`~neurotomy.errors.DataError` before the pass (:func:`~neurotomy.models.data_fit.check_images_fit`)."""
    batch_size = validate.positive_int(batch_size, "batch_size")
    max_images = None if max_images is None else validate.positive_int(max_images, "max_images")
    check_images_fit(model, data)
    place(model, device)
    where = model_device(model)
    logits, targets = [], []
    with progress_bar(quiet) as bar, eval_mode(model):
        task = add_task(bar, "evaluate", num_batches(data, batch_size, max_images))
        for images, y in iterate_batches(data, batch_size, max_images=max_images):
            logits.append(model(to_device(where, images)).cpu())
            targets.append(y)
            bar.advance(task)
    return torch.cat(logits), torch.cat(targets)


def classification_metrics(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows = true class). A class
    never predicted has no precision, and a class with no image in ``targets`` no recall (``None``, not
    0: nothing was wrong, nothing was tested).

    >>> m = classification_metrics(torch.tensor([0, 0]), torch.tensor([0, 1]), 3)
    >>> m["per_class_precision"], m["per_class_recall"]
    ([0.5, None, None], [1.0, 0.0, None])

    Labels that are not class indices below ``num_classes`` are a one-line
    :class:`~neurotomy.errors.DataError` (:func:`~neurotomy.data.labels.check_labels`).
    """
    check_labels(targets, num_classes)
    confusion = torch.bincount(targets * num_classes + predicted, minlength=num_classes ** 2)
    confusion = confusion.view(num_classes, num_classes)
    tp = confusion.diag().double()
    predicted_as = confusion.sum(0)
    precision = tp / predicted_as.clamp(min=1)
    true_images = confusion.sum(1)
    recall = tp / true_images.clamp(min=1)
    return {
        "accuracy": float(tp.sum() / max(1, len(targets))),
        "n": int(len(targets)),
        "per_class_precision": [round(float(p), 6) if n else None for p, n in zip(precision, predicted_as)],
        "per_class_recall": [round(float(r), 6) if n else None for r, n in zip(recall, true_images)],
        "confusion": confusion.tolist(),
    }


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 256, max_images: int | None = None,
             quiet: bool = False, device: str | torch.device | None = None) -> dict:
    """Metrics of ``model`` on ``data`` (see :func:`classification_metrics`); computed on ``device``
    (the model is moved there; ``None``: where the model is). Impossible labels are a one-line
    :class:`~neurotomy.errors.DataError` before the pass where the labels are at hand
    (:func:`~neurotomy.models.data_fit.check_known_labels`), else after it; images the model cannot
    take, before it (:func:`predict`)."""
    check_known_labels(model, data)  # the images: predict checks them, once
    logits, targets = predict(model, data, batch_size, max_images, quiet, device)
    named = list(getattr(data, "classes", None) or [])
    # a model with more outputs than the data names classes: its extra outputs are classes too (by index),
    # so a prediction past the data's list counts as wrong instead of breaking the confusion matrix
    num_classes = max(len(named), logits.shape[1])
    metrics = classification_metrics(logits.argmax(1), targets, num_classes)
    metrics["classes"] = named + list(range(len(named), num_classes))
    return metrics


def finetune_head(head: nn.Module, features: torch.Tensor, targets: torch.Tensor, epochs: int = 3,
                  lr: float = 2e-4, batch_size: int = 128, seed: int = 0, quiet: bool = False,
                  on_epoch_end: Callable[[nn.Module, int], None] | None = None) -> list[dict]:
    """Fit ``head`` in place on fixed features with Adam (the decomposed head of
    :class:`neurotomy.surgery.heads.SubspaceHead`: the backbone is frozen, so one epoch over 60k
    images is a few thousand small matrix products); one ``{"epoch", "loss"}`` per epoch.
    ``on_epoch_end(head, epoch)`` runs after each epoch (e.g. to measure test accuracy)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    features = features.float()
    history = []
    steps = (len(targets) + batch_size - 1) // batch_size
    where = model_device(head)
    head.train()
    with progress_bar(quiet) as bar:
        task = add_task(bar, "fine-tune head", steps * epochs)
        for epoch in range(epochs):
            order = torch.randperm(len(targets), generator=generator)
            total = 0.0
            for start in range(0, len(targets), batch_size):
                idx = order[start:start + batch_size]
                x, y = to_device(where, features[idx], targets[idx])
                loss = F.cross_entropy(head(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
                bar.advance(task)
            history.append({"epoch": epoch + 1, "loss": total / len(targets)})
            if on_epoch_end is not None:
                head.eval()
                on_epoch_end(head, epoch)
                head.train()
    head.eval()
    return history
