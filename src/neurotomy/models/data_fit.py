"""Does this data fit this model? One comparison of a dataset with what the model was trained on
(:func:`check_data_fits`), and the model's own dataset as its checkpoint records it
(:func:`dataset_for_model`).

The model's side comes from its checkpoint metadata (:class:`~neurotomy.checkpoint.ModelMeta`:
dataset name, input shape, classes, normalisation) or, for a bare ``nn.Module``, from its anatomy
(the classifier's outputs, the first convolution's input channels). Two differences make a run
meaningless and are errors (:class:`~neurotomy.errors.DataError`): a different **class count** (every
label would name another class) and a different **channel count** (the first layer cannot take the
images). So is a class both name at another label index (a renamed class folder shifts the others), and
a spatial size the model cannot run at (one image through it tells). The others are returned as
warnings, one phrase each: a size it runs at, other class names, normalisation (any channel's mean or std
off by more than :data:`NORMALIZATION_TOLERANCE`) and dataset name.

Example:
    >>> from neurotomy.data import load_dataset
    >>> from neurotomy.models import build_model
    >>> model = build_model("lenet5", 1, 10, 8)
    >>> check_data_fits(model, load_dataset("digits", split="test"))
    []
    >>> check_data_fits(build_model("lenet5", 1, 3, 8), load_dataset("digits", split="test"))
    Traceback (most recent call last):
    ...
    neurotomy.errors.DataError: the data has 10 classes but the model has 3; give data with the model's 3 classes, or a model trained on this data
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.labels import check_labels, dataset_targets, known_targets
from neurotomy.data.sources import canonical_name, load_dataset
from neurotomy.data.tensor_dataset import Normalization
from neurotomy.errors import DataError, ModelError
from neurotomy.device import model_device
from neurotomy.models.anatomy import classifier_layer, eval_mode

NORMALIZATION_TOLERANCE = 0.02
"""Largest difference of a channel's mean or std (in units of [0, 1] pixels) that goes unmentioned."""


@dataclass(frozen=True)
class TrainingData:
    """What a model knows of the data it was trained on; None where it cannot tell."""

    dataset: str | None = None
    channels: int | None = None
    size: tuple[int, int] | None = None
    num_classes: int | None = None
    normalization: dict | None = None
    class_names: tuple[str, ...] | None = None


def training_data_of(model: nn.Module) -> TrainingData:
    """The model's training data as its checkpoint records it, else as its layers tell."""
    meta = getattr(model, "neurotomy_meta", None)
    if meta is not None:
        args = getattr(meta, "arch_args", None) or {}
        # what it cannot tell (no in_channels / input_size recorded) stays None
        channels, side = args.get("in_channels"), args.get("input_size")
        # the class names first: a class module keeps its parent's num_classes but answers c-vs-rest
        classes = len(meta.classes) if meta.classes else args.get("num_classes")
        return TrainingData(dataset=meta.dataset, channels=int(channels) if channels is not None else None,
                            size=(int(side), int(side)) if side is not None else None,
                            num_classes=int(classes) if classes is not None else None,
                            normalization=meta.normalization,
                            class_names=tuple(str(c) for c in meta.classes) if meta.classes else None)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        classes = classifier_layer(model)[1].out_features
    except ModelError:
        classes = None
    return TrainingData(channels=convs[0].in_channels if convs else None, num_classes=classes)


def normalized_as_trained(model: nn.Module, data: Dataset) -> Dataset:
    """``data`` normalised with the normalisation ``model`` was trained with (its checkpoint records it),
    whatever the data's own statistics: a trained model sees its inputs as it learned them. A model
    that records none (fresh, or a bare ``nn.Module``), or data with another channel count (an error
    for :func:`check_data_fits`), keeps the data as it is.

    Example:
        >>> from neurotomy.data import load_dataset
        >>> from neurotomy.models import build_model
        >>> model = build_model("lenet5", 1, 10, 8)
        >>> model.neurotomy_meta.normalization = {"mean": [0.5], "std": [0.25]}
        >>> normalized_as_trained(model, load_dataset("digits", split="test")).normalization
        Normalization(mean=(0.5,), std=(0.25,))
    """
    recorded = getattr(getattr(model, "neurotomy_meta", None), "normalization", None)
    own = getattr(data, "normalization", None)
    if not recorded or own is None or not hasattr(data, "with_normalization") or len(recorded["mean"]) != len(own.mean):
        return data
    return data.with_normalization(Normalization.from_dict(recorded))


def dataset_for_model(model: nn.Module, split: str = "test", data: str | None = None,
                      root: str | os.PathLike | None = None, as_trained: bool = True, **options) -> Dataset:
    """One split of ``data`` (a :func:`~neurotomy.data.load_dataset` name) for ``model``; without
    ``data``, the dataset its checkpoint records. The model's own dataset (recorded, or named again)
    is read from the recorded absolute root with the recorded options (class names, input size)
    unless ``root`` or ``options`` say otherwise. The images are normalised as the model was trained
    (:func:`normalized_as_trained`) unless ``as_trained=False`` (the data's own statistics, to compare
    them with :func:`check_data_fits` first).

    Example:
        >>> from neurotomy.models import build_model
        >>> model = build_model("lenet5", 1, 10, 8)
        >>> dataset_for_model(model, data="digits").name
        'digits'
    """
    meta = getattr(model, "neurotomy_meta", None)
    own = getattr(meta, "dataset", None)
    name = data or own
    if not name:
        raise DataError("the model does not record its dataset; pass --data NAME (data=NAME)")
    recorded: dict = {}
    if own and (not data or canonical_name(data) == canonical_name(own)):
        root = root or getattr(meta, "dataset_root", None)
        recorded = dict(getattr(meta, "dataset_options", None) or {})
    try:
        loaded = load_dataset(name, root=root, split=split, **{**recorded, **options})
    except DataError as exc:
        if data:
            raise
        raise DataError(f"the model's recorded dataset {name}: {exc} (or pass --data/--root)") from None
    return normalized_as_trained(model, loaded) if as_trained else loaded


def fitted_dataset(model: nn.Module, split: str = "test", data: str | None = None,
                   root: str | os.PathLike | None = None, **options) -> tuple[Dataset, list[str]]:
    """:func:`dataset_for_model` normalised as the model was trained, and how the data differs from its
    training data (:func:`check_data_fits`, on the data's own statistics; a last phrase says the images
    took the model's normalisation). What every command runs on.

    Example:
        >>> from neurotomy.models import build_model
        >>> data, differences = fitted_dataset(build_model("lenet5", 1, 10, 8), data="digits")
        >>> data.name, differences
        ('digits', [])
    """
    loaded = dataset_for_model(model, split, data, root, as_trained=False, **options)
    differences = check_data_fits(model, loaded) if isinstance(model, nn.Module) else []
    trained = normalized_as_trained(model, loaded)
    if differences and trained is not loaded:
        differences.append("the images are normalised with the model's own mean and std, as it was trained")
    return trained, differences


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def check_images_fit(model: nn.Module, data: Dataset) -> torch.Tensor:
    """Before any pass of ``model`` over ``data``: the data is not empty and its first item (the only one
    read) is an ``(image, label)`` pair whose image the model takes: a float tensor ``(C, H, W)`` with the
    model's channel count. Else a one-line :class:`DataError` naming the fix, before torch meets the
    batch (uint8 images, H×W images batched as one N-channel image). Models that tell nothing of their
    input (no checkpoint metadata, no Conv2d) are checked for emptiness only. Returns that first image."""
    if len(data) == 0:
        raise DataError("the data is empty; give at least one labelled image")
    item = data[0]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"data[0] is a {type(item).__name__}, not an (image, label) pair; give a dataset whose "
                        "items are (image, label) pairs")
    image = item[0]
    if isinstance(image, np.ndarray):
        image = torch.as_tensor(image)  # the DataLoader collates arrays into tensors
    if not isinstance(image, torch.Tensor):
        raise DataError(f"the data's images are {type(image).__name__} objects, not tensors; give normalised float "
                        "tensors (e.g. torchvision's ToTensor() and Normalize(...) as the dataset's transform)")
    trained = training_data_of(model)
    if getattr(model, "neurotomy_meta", None) is None and trained.channels is None:
        return image
    channels = trained.channels
    takes = f"{channels}-channel images" if channels is not None else "images (C, H, W)"
    if not image.is_floating_point():
        raise DataError(f"the data's images are {str(image.dtype).removeprefix('torch.')} tensors but the model "
                        "takes float images; give them as the model was trained: images.float() / 255, normalised")
    if image.dim() == 2:
        raise DataError(f"the data's images are {image.shape[0]}×{image.shape[1]} with no channel axis but the model "
                        f"takes {takes}; add the axis (images.unsqueeze(1) on an N×H×W tensor)")
    if image.dim() != 3:
        raise DataError(f"the data's images have shape {tuple(image.shape)} but the model takes {takes}, one per "
                        "item; give a dataset whose items are (image (C, H, W), label)")
    if channels is not None and image.shape[0] != channels:
        where = f" (it was trained on {trained.dataset})" if trained.dataset else ""
        raise DataError(f"the data has {image.shape[0]}-channel images but the model takes {channels}; give "
                        f"{'grey' if channels == 1 else f'{channels}-channel'} images{where}")
    if trained.size is not None and tuple(image.shape[1:]) != trained.size:
        _check_size_runs(model, image, trained.size)
    return image


def _check_size_runs(model: nn.Module, image: torch.Tensor, size: tuple[int, int]) -> None:
    """A model trained at ``size`` may run at another (global pooling) or not (a flatten into a
    linear layer): one image through it tells, and a failure is one line naming the resize — before
    torch's shape error meets a whole pass (or a training run) half-way."""
    try:
        with torch.no_grad(), eval_mode(model):
            model(image[None].to(model_device(model)))
    except Exception as exc:  # a shape error of any layer type: all mean "not this size"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        side = size[0] if size[0] == size[1] else f"{size[0]}×{size[1]}"
        raise DataError(f"the data's images are {image.shape[1]}×{image.shape[2]} but the model was trained on "
                        f"{size[0]}×{size[1]} and does not run on them ({first[:120]}); resize them "
                        f"(--input-size {side}, input_size={side} in load_dataset)") from None


def _names(classes) -> str:
    shown = ", ".join(str(c) for c in list(classes)[:5])
    return f"({shown}{', …' if len(classes) > 5 else ''})"


def _check_class_order(trained: TrainingData, classes: list[str]) -> None:
    """A class the model and the data both name, at another label index: every label of it would
    name another class (a renamed or added class folder shifts the alphabetical order) — an error,
    since the accuracy would be silently wrong. Names that simply differ are a warning phrase."""
    if not trained.class_names:
        return
    model_index = {name: i for i, name in enumerate(trained.class_names)}
    moved = [(name, i, model_index[name]) for i, name in enumerate(classes)
             if name in model_index and model_index[name] != i]
    if moved:
        name, i, j = moved[0]
        raise DataError(f"class {name!r} is label {i} in the data but {j} for the model (the data's classes "
                        f"{_names(classes)}, the model's {_names(trained.class_names)}); give data whose classes "
                        "are the model's, in its order (rename the class folders back)")


def check_data_runs(model: nn.Module, data: Dataset, labels: bool = True) -> bool:
    """The cheap checks before a pass over ``data`` (fit, evaluate, a data-driven criterion):
    :func:`check_images_fit`, and with ``labels`` the labels where they are at hand without reading the
    data (:func:`~neurotomy.data.labels.known_targets`) against the model's class count. Returns whether
    the labels were checked here; when not, the caller checks each batch's
    (:func:`~neurotomy.data.labels.check_labels`)."""
    check_images_fit(model, data)
    return check_known_labels(model, data) if labels else True


def check_known_labels(model: nn.Module, data: Dataset) -> bool:
    """The labels of ``data`` against the model's class count
    (:func:`~neurotomy.data.labels.check_labels`) where both are at hand without reading the data;
    returns whether they were checked."""
    targets, classes = known_targets(data), training_data_of(model).num_classes
    if targets is None or classes is None:
        return False
    check_labels(targets, classes)
    return True


def check_data_fits(model: nn.Module, data: Dataset) -> list[str]:
    """Differences between ``data`` and the model's training data, one phrase each (empty when
    it fits); raises :class:`DataError` on a class or channel count mismatch, or images the model
    cannot take (:func:`check_images_fit`). Data without a ``classes`` list must have labels that
    are class indices of the model."""
    trained = training_data_of(model)
    where = f" (it was trained on {trained.dataset})" if trained.dataset else ""
    classes = getattr(data, "classes", None)
    if not classes:
        check_labels(dataset_targets(data), trained.num_classes)
    elif trained.num_classes is not None and len(classes) != trained.num_classes:
        raise DataError(f"the data has {len(classes)} classes but the model has {trained.num_classes}; give data "
                        f"with the model's {trained.num_classes} classes{where}, or a model trained on this data")
    else:
        _check_class_order(trained, [str(c) for c in classes])
    image = check_images_fit(model, data)
    size = tuple(int(s) for s in image.shape[1:])
    differences = []
    if trained.size is not None and size != trained.size:
        differences.append(f"images are {size[0]}×{size[1]}, the model was trained on {trained.size[0]}×"
                           f"{trained.size[1]} (resize with --input-size {trained.size[0]})")
    if classes and trained.class_names and len(classes) == len(trained.class_names) \
            and [str(c) for c in classes] != list(trained.class_names):
        differences.append(f"classes {_names(classes)}, the model's {_names(trained.class_names)}")
    norm = getattr(data, "normalization", None)
    if trained.normalization and norm is not None and len(norm.mean) == len(trained.normalization["mean"]):
        pairs = zip((*norm.mean, *norm.std), (*trained.normalization["mean"], *trained.normalization["std"]))
        if any(abs(a - b) > NORMALIZATION_TOLERANCE for a, b in pairs):
            differences.append(f"normalisation mean {_fmt(norm.mean)} std {_fmt(norm.std)}, trained with mean "
                               f"{_fmt(trained.normalization['mean'])} std {_fmt(trained.normalization['std'])}")
    name = getattr(data, "name", "")
    if trained.dataset and name and canonical_name(name) != canonical_name(trained.dataset):
        differences.append(f"dataset {name}, trained on {trained.dataset}")
    return differences


__all__ = ["NORMALIZATION_TOLERANCE", "TrainingData", "check_data_fits", "check_data_runs", "check_images_fit",
           "check_known_labels", "dataset_for_model", "fitted_dataset", "normalized_as_trained", "training_data_of"]
