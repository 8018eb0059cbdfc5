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

import hashlib
import json
import math
import os
import random
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.augment import random_crop_flip
from neurotomy.data.batches import batch_sizes, iterate_batches, num_batches
from neurotomy.distributed import data_parallel, is_main_process, sum_over_processes
from neurotomy.errors import ResumeError, TrainingError
from neurotomy.files import atomic_write
from neurotomy import validate
from neurotomy.grad_mask import GradMaskConfig, training_mask
from neurotomy.progress import add_task, progress_bar


SCHEDULES = ("onecycle", "cosine", "constant")
"""Learning-rate schedules ``fit`` knows (one-cycle: Smith 2018)."""
AUGMENTATIONS = ("auto", "crop-flip", "crop", "none")
"""Augmentations ``fit`` knows; ``auto`` crops, and flips only data declared flip-safe (``data.flip_safe``)."""


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
        if self.max_images is not None:
            self.max_images = validate.positive_int(self.max_images, "max_images")
        GradMaskConfig(self.grad_mask_rule, self.grad_mask_tau, self.grad_mask_q, self.grad_mask_sites)

    def to_dict(self) -> dict:
        return asdict(self)

    def settings(self) -> dict:
        """What decides the weights: every field but ``quiet`` (a resumed run must match these)."""
        return {k: v for k, v in self.to_dict().items() if k != "quiet"}


OUR_LR, OTHER_LR = 0.1, 0.01


def default_learning_rate(model: nn.Module) -> float:
    """0.1 for neurotomy's own architectures (tuned for them: BatchNorm, small inputs), 0.01 for
    every other model: torchvision's and timm's ImageNet networks trained from scratch on a small
    set diverge at 0.1 (logits of 1e13 were seen with ResNet-18), and 0.01 is their usual SGD rate.

    Example:
        >>> from neurotomy.models import build_model
        >>> default_learning_rate(build_model("lenet5", 1, 10, 8)), default_learning_rate(nn.Linear(2, 2))
        (0.1, 0.01)
    """
    return OUR_LR if type(model).__module__.startswith("neurotomy.models") else OTHER_LR


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
    hard = F.cross_entropy(logits, targets)
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


def fit(model: nn.Module, data: Dataset, config: TrainConfig, teacher: nn.Module | None = None,
        on_epoch_end: EpochHook | None = None, description: str = "train", state: "RunState | None" = None,
        state_key: str = "fit") -> list[dict]:
    """Train ``model`` in place; return one ``{"epoch", "loss", "accuracy"}`` record per epoch.

    With ``state`` (a :class:`RunState`), everything the next epoch depends on is saved there under
    ``state_key`` after each epoch, and a state that already holds ``state_key`` is continued from
    its last epoch (the configuration, data and starting weights must be the same, or
    :class:`~neurotomy.errors.ResumeError`). A diverging loss raises
    :class:`~neurotomy.errors.TrainingError` (see :class:`LossWatch`).
    """
    lr = config.lr if config.lr is not None else default_learning_rate(model)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=True)
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
                logits = parallel.module(images)
                teacher_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(images)
                loss = _loss(logits, targets, teacher_logits, config)
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
            quiet: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of the whole dataset, in order."""
    batch_size = validate.positive_int(batch_size, "batch_size")
    max_images = None if max_images is None else validate.positive_int(max_images, "max_images")
    model.eval()
    logits, targets = [], []
    with progress_bar(quiet) as bar:
        task = add_task(bar, "evaluate", num_batches(data, batch_size, max_images))
        for images, y in iterate_batches(data, batch_size, max_images=max_images):
            logits.append(model(images))
            targets.append(y)
            bar.advance(task)
    return torch.cat(logits), torch.cat(targets)


def classification_metrics(predicted: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows = true class)."""
    confusion = torch.bincount(targets * num_classes + predicted, minlength=num_classes ** 2)
    confusion = confusion.view(num_classes, num_classes)
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).clamp(min=1)
    recall = tp / confusion.sum(1).clamp(min=1)
    return {
        "accuracy": float(tp.sum() / max(1, len(targets))),
        "n": int(len(targets)),
        "per_class_precision": [round(float(p), 6) for p in precision],
        "per_class_recall": [round(float(r), 6) for r in recall],
        "confusion": confusion.tolist(),
    }


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 256, max_images: int | None = None,
             quiet: bool = False) -> dict:
    """Metrics of ``model`` on ``data`` (see :func:`classification_metrics`)."""
    logits, targets = predict(model, data, batch_size, max_images, quiet)
    num_classes = len(getattr(data, "classes", [])) or logits.shape[1]
    metrics = classification_metrics(logits.argmax(1), targets, num_classes)
    metrics["classes"] = list(getattr(data, "classes", range(num_classes)))
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
    head.train()
    with progress_bar(quiet) as bar:
        task = add_task(bar, "fine-tune head", steps * epochs)
        for epoch in range(epochs):
            order = torch.randperm(len(targets), generator=generator)
            total = 0.0
            for start in range(0, len(targets), batch_size):
                idx = order[start:start + batch_size]
                loss = F.cross_entropy(head(features[idx]), targets[idx])
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


# ------------------------------------------------------------------------------------------------
# Resumable runs: one state file next to a job's output

STATE_SUFFIX = ".resume"
"""The state file of ``--out PATH`` is ``PATH.resume``."""
STATE_VERSION = 1
_META_KEY = "neurotomy_state"
PAUSE_ENV = "NEUROTOMY_TEST_PAUSE_AFTER_EPOCH"
"""Test hook: after saving epoch N (this variable's value) a fit sleeps, so a test can kill it there."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a job with a :class:`RunState`; the message says how to resume."""


def weights_digest(model: nn.Module) -> str:
    """A short SHA-256 of every tensor of ``model.state_dict()`` (names, dtypes, shapes, bytes).

    Example:
        >>> a = nn.Linear(2, 2); b = nn.Linear(2, 2)
        >>> len(weights_digest(a)), weights_digest(a) == weights_digest(b)
        (16, False)
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def fit_fingerprint(model: nn.Module, data: Dataset, settings: dict, teacher: nn.Module | None = None) -> dict:
    """What a resumed fit must share with the interrupted one: settings, data, starting weights."""
    return _plain({"settings": settings, "data": f"{getattr(data, 'name', '') or type(data).__name__}:{len(data)}",
                   "weights": weights_digest(model),
                   "teacher": weights_digest(teacher) if teacher is not None else None})


def rng_state() -> dict:
    """Every global random state: Python, NumPy, torch (and CUDA once initialised)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, key.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Set every global random state from :func:`rng_state`'s record."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj: Any) -> Any:
    """JSON's view of ``obj`` (tuples become lists, paths strings), to compare settings."""
    return json.loads(json.dumps(obj, default=str))


def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON for ``obj`` with every tensor moved into ``tensors`` under a key starting with ``key``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return _encode(torch.from_numpy(np.array(obj)), key, tensors)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{key}/{k}", tensors) for k, v in obj.items()}
        # non-string keys (an optimizer's parameter indices) must come back as they were
        return {"__items__": [[_encode(k, f"{key}/{i}.key", tensors), _encode(v, f"{key}/{i}", tensors)]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"a state file stores tensors and JSON values, not a {type(obj).__name__} ({key})")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def _first_difference(saved: Any, now: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in list(saved) + [k for k in now if k not in saved]:
            found = _first_difference(saved.get(key), now.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if saved == now else (prefix.rstrip("."), saved, now)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


class RunState:
    """What a long job has done so far, in one file written atomically after every epoch or stage.

    The file is safetensors (never pickle): the tensors — model, optimizer, RNG states — as tensors,
    everything else (settings, epoch reached, scheduler, history, stage results) as JSON in its
    header. ``fit(…, state=s, state_key=k)`` saves and resumes epochs under ``k``; a job saves each
    finished stage with :meth:`save_stage` and skips it on resume with :meth:`load_stage` (which also
    puts back the random state the stage left, so later stages draw what they drew before), and
    declares its settings with :meth:`expect`, so resuming with other settings is refused.

    Used as a context manager around the job *and* the writing of its output: on success the file is
    removed (also when training diverged: resuming would diverge again); on any other error it stays
    for ``--resume``; Ctrl-C becomes :class:`Interrupted`, whose one line says where the state is and
    how to resume.

    Example:
        >>> import tempfile
        >>> from neurotomy.data import load_dataset
        >>> from neurotomy.models import build_model
        >>> path = Path(tempfile.mkdtemp()) / "lenet.safetensors"
        >>> data, config = load_dataset("digits"), TrainConfig(epochs=1, batch_size=64, quiet=True)
        >>> with RunState.beside(path) as state:  # with resume=True, fit would continue from the file
        ...     _ = seed_everything(0); model = build_model("lenet5", 1, 10, 8)
        ...     _ = fit(model, data, config, state=state)
        ...     state.path.name, state.path.exists()
        ('lenet.safetensors.resume', True)
        >>> state.path.exists()  # removed on success
        False
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False) -> None:
        self.path = Path(path)
        self.resume = resume
        self._json: dict = {"version": STATE_VERSION, "settings": {}, "stages": {}, "fits": {}}
        self._tensors: dict[str, torch.Tensor] = {}
        self._progress = ""
        if resume:
            self._read()
        elif self.path.exists() and is_main_process():
            print(f"neurotomy: {self.path} holds an interrupted run; starting over (pass --resume to continue it)",
                  file=sys.stderr)

    @classmethod
    def beside(cls, out: str | os.PathLike, resume: bool = False) -> "RunState":
        """The state of the job writing ``out``: the file ``out`` + :data:`STATE_SUFFIX`."""
        out = Path(out)
        return cls(out.with_name(out.name + STATE_SUFFIX), resume)

    # -------------------------------------------------------------- settings
    def expect(self, settings: dict, part: str = "job") -> None:
        """Record the settings of the job (or of one ``part`` of it, e.g. the prune inside a
        dissection), or check them against the interrupted run's."""
        settings = _plain(settings)
        saved = self._json["settings"].get(part)
        if saved is None:
            self._json["settings"][part] = settings
            return
        difference = _first_difference(saved, settings)
        if difference:
            name, before, now = difference
            raise ResumeError(f"--resume: {self.path} was written with {name}={_short(before)}, this run has "
                              f"{name}={_short(now)}; rerun with the same settings, or without --resume to start over")

    # -------------------------------------------------------------- stages
    def has_stage(self, name: str) -> bool:
        return name in self._json["stages"]

    def save_stage(self, name: str, result: Any) -> None:
        """Save a finished stage's ``result`` (JSON values and tensors) with the random state after it."""
        prefix = f"stage/{name}"
        self._drop(prefix)
        self._json["stages"][name] = {"result": _encode(result, f"{prefix}/result", self._tensors),
                                      "rng": _encode(rng_state(), f"{prefix}/rng", self._tensors)}
        self._progress = f"the results up to stage {name!r}"
        self._write()

    def load_stage(self, name: str) -> Any:
        """A saved stage's result; the global random state becomes what that stage left behind."""
        entry = self._json["stages"][name]
        restore_rng(_decode(entry["rng"], self._tensors))
        return _decode(entry["result"], self._tensors)

    # -------------------------------------------------------------- fits
    def resume_fit(self, key: str, fingerprint: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler, generator: torch.Generator) -> tuple[int, list[dict]]:
        """Load fit ``key``'s last saved epoch into the objects; (epochs done, history), or (0, [])."""
        entry = self._json["fits"].get(key)
        if entry is None:
            return 0, []
        difference = _first_difference(entry["fingerprint"], fingerprint)
        if difference:
            name, before, now = difference
            raise ResumeError(f"--resume: the interrupted run's {key!r} had {name}={_short(before)}, this one has "
                              f"{name}={_short(now)}; rerun with the same settings and model, or without --resume")
        saved = _decode({k: entry[k] for k in ("model", "optimizer", "scheduler", "generator", "rng")}, self._tensors)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        restore_rng(saved["rng"])
        return entry["epoch"], list(entry["history"])

    def save_fit(self, key: str, fingerprint: dict, epoch: int, epochs: int, history: list[dict], model: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator) -> None:
        """Save everything epoch ``epoch + 1`` of fit ``key`` depends on."""
        prefix = f"fit/{key}"
        self._drop(prefix)
        tensors = self._tensors
        self._json["fits"][key] = {
            "epoch": epoch, "epochs": epochs, "fingerprint": fingerprint, "history": _plain(history),
            "model": _encode(model.state_dict(), f"{prefix}/model", tensors),
            "optimizer": _encode(optimizer.state_dict(), f"{prefix}/optimizer", tensors),
            "scheduler": _encode(scheduler.state_dict(), f"{prefix}/scheduler", tensors),
            "generator": _encode(generator.get_state(), f"{prefix}/generator", tensors),
            "rng": _encode(rng_state(), f"{prefix}/rng", tensors)}
        self._progress = f"the state after epoch {epoch} of {epochs}"
        self._write()
        if os.environ.get(PAUSE_ENV) == str(epoch):
            time.sleep(600)

    def forget_fit(self, key: str) -> None:
        """Drop fit ``key`` (its stage's result now holds what it made); written with the next save."""
        self._json["fits"].pop(key, None)
        self._drop(f"fit/{key}")

    # -------------------------------------------------------------- the file
    def finish(self) -> None:
        """The job's output is written: the state is no longer needed."""
        if is_main_process():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunState":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is None or issubclass(kind, TrainingError):  # a diverged run would only diverge again
            self.finish()
        elif issubclass(kind, KeyboardInterrupt) and not isinstance(exc, Interrupted):
            raise Interrupted(self._interrupted_message()) from None
        return False

    def _interrupted_message(self) -> str:
        if not self.path.exists():
            return "interrupted before the first epoch or stage ended; nothing was saved to resume"
        return (f"interrupted; {self._progress or 'the work done so far'} is saved in {self.path} — run the same "
                f"command with --resume to continue")

    def _drop(self, prefix: str) -> None:
        for name in [n for n in self._tensors if n.startswith(prefix + "/")]:
            del self._tensors[name]

    def _write(self) -> None:
        if not is_main_process():  # under `accelerate launch` every process holds the same state
            return
        from safetensors.torch import save_file

        header = {_META_KEY: json.dumps(self._json)}
        atomic_write(self.path, lambda tmp: save_file(self._tensors, str(tmp), metadata=header))

    def _read(self) -> None:
        from safetensors import safe_open

        if not self.path.is_file():
            raise ResumeError(f"--resume: there is no state file {self.path}; nothing to resume (run without "
                              "--resume to start)")
        try:
            with safe_open(str(self.path), "pt") as f:
                header = json.loads((f.metadata() or {})[_META_KEY])
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if header.get("version") != STATE_VERSION:
                raise ValueError(f"version {header.get('version')!r}, expected {STATE_VERSION}")
            self._json.update({k: header[k] for k in ("settings", "stages", "fits")})
        except Exception as exc:  # any damage: one line, and the way out
            reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
            raise ResumeError(f"--resume: cannot read the state file {self.path} ({reason}); delete it and run "
                              "without --resume") from None
        self._tensors = tensors
        fits = self._json["fits"]
        if fits:
            last = list(fits.values())[-1]
            self._progress = f"the state after epoch {last['epoch']} of {last['epochs']}"
        elif self._json["stages"]:
            self._progress = f"the results up to stage {list(self._json['stages'])[-1]!r}"
