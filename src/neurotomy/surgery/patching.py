"""Patch a weak model with a strong model's class module (CNNSplitter, Qi et al., ASE 2022, §5).

The rule (docs/methods.md §E4): the weak model gives class probabilities p = softmax(weak(x)); the module
of class c gives m(x), its probability of "c"; m is min-max rescaled to [0, 1] over a calibration
set, ŝ = clip((m − lo) / (hi − lo), 0, 1), and replaces p_c; the prediction is the argmax of the
result. Every other class keeps the weak model's probability, so the module only moves decisions
that involve class c.

Consistency of the rule: the composed prediction equals the weak model's wherever the module and
the weak model *agree about c*, meaning ŝ ranks against the weak model's other probabilities the
way p_c does (both above every other class, or both below the weak model's top class) — see
:func:`agrees_about_class`.

:class:`PatchedModel` is an ordinary ``nn.Module`` (forward returns log scores whose argmax is the
decision); it saves as one safetensors checkpoint whose metadata holds both parts' architectures
and recipes (arch ``"patched"``), so :func:`neurotomy.loading.load_checkpoint` rebuilds it without pickle.

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> from neurotomy.surgery.class_modules import cut_class_module
    >>> model, data = load_model("zoo:lenet5-digits"), load_dataset("digits")
    >>> module = cut_class_module(model, data, class_index=3, calibration_images=100, quiet=True).model
    >>> patched = patch(model, module, data, quiet=True)
    >>> patched.target_class, patched(data[0][0][None]).shape
    (3, torch.Size([1, 10]))
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.checkpoint import ModelMeta
from neurotomy.errors import ModelError, NeurotomyError
from neurotomy.models.anatomy import num_classes_of
from neurotomy.models.data_fit import training_data_of
from neurotomy.surgery.class_modules import module_class_index, module_scores


class PatchedModel(nn.Module):
    """``weak`` answers every class but ``target_class``, whose probability comes from ``module``."""

    def __init__(self, weak: nn.Module, module: nn.Module, target_class: int, low: float = 0.0,
                 high: float = 1.0) -> None:
        super().__init__()
        self.weak, self.module, self.target_class = weak, module, int(target_class)
        self.register_buffer("low", torch.tensor(float(low)))
        self.register_buffer("high", torch.tensor(float(high)))

    def module_probability(self, x: torch.Tensor) -> torch.Tensor:
        """The module's probability of the target class, min-max rescaled to [0, 1]."""
        m = self.module(x).softmax(1)[:, 1]
        return ((m - self.low) / (self.high - self.low).clamp(min=1e-12)).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self.weak(x).softmax(1)
        column = torch.arange(probs.shape[1], device=probs.device) == self.target_class
        probs = torch.where(column, self.module_probability(x)[:, None], probs)
        return probs.clamp(min=1e-12).log()


def agrees_about_class(weak_probs: torch.Tensor, module_probability: torch.Tensor, target_class: int) -> torch.Tensor:
    """Per image: does the rescaled module output rank against the weak model's other classes as
    the weak model's own p_c does (both first, or both below the weak model's top class)?"""
    others = weak_probs.clone()
    others[:, target_class] = -1.0
    rival = others.amax(1)
    weak_says_c = weak_probs.argmax(1) == target_class
    module_says_c = module_probability > rival
    return weak_says_c == module_says_c


@torch.no_grad()
def patch(weak: nn.Module, module: nn.Module, calibration: Dataset, target_class: int | None = None,
          quiet: bool = False) -> PatchedModel:
    """Compose ``weak`` with ``module`` (its class from the module's recipe unless given), the
    module's output range measured on ``calibration`` (e.g. the training data)."""
    c = module_class_index(module) if target_class is None else validate.non_negative_int(target_class, "target_class")
    weak_classes = num_classes_of(weak)
    if not 0 <= c < weak_classes:
        raise NeurotomyError(f"the module answers class {c} but the weak model has classes 0…{weak_classes - 1}; "
                             "patch a model trained on the same classes")
    # both parts see every input: inputs one of them cannot take make a model that runs on none
    weak_takes, module_takes = training_data_of(weak), training_data_of(module)  # None: the model cannot tell
    for what, text in (("channels", "{}-channel"), ("size", "{0[0]}×{0[1]}")):
        weak_value, module_value = getattr(weak_takes, what), getattr(module_takes, what)
        if None not in (weak_value, module_value) and weak_value != module_value:
            raise ModelError(f"the weak model takes {text.format(weak_value)} images but the module takes "
                             f"{text.format(module_value)} ones; patch with a module cut from a model made for the "
                             "same inputs")
    probs, _ = module_scores(module, calibration)
    low, high = float(probs.min()), float(probs.max())
    if high - low < 1e-6:
        raise NeurotomyError("the module gives the same output on every calibration image; calibrate on data "
                             "that contains the module's class and others")
    patched = PatchedModel(weak.eval(), module.eval(), c, low, high).eval()
    weak_meta, module_meta = getattr(weak, "neurotomy_meta", None), getattr(module, "neurotomy_meta", None)
    if weak_meta is not None and module_meta is not None and weak_meta.recorded_input_shape is not None:
        in_channels, size, _ = weak_meta.recorded_input_shape
        patched.neurotomy_meta = ModelMeta(
            arch="patched",
            arch_args={"in_channels": in_channels, "num_classes": weak_classes, "input_size": size,
                       "weak": asdict(weak_meta), "module": asdict(module_meta), "target_class": c},
            dataset=weak_meta.dataset, dataset_root=weak_meta.dataset_root, dataset_options=weak_meta.dataset_options,
            normalization=weak_meta.normalization, classes=weak_meta.classes,
            metrics={"calibration": {"low": low, "high": high, "images": len(calibration)}},
            seed=weak_meta.seed)
    return patched
