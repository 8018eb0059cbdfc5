"""From a name or a file to a working model: checkpoints (architecture + surgery recipe + weights),
the zoo, torchvision, timm and a user's own ``file.py:factory``, optional ``--weights``.

This floor sits above ``models/`` (architectures) and ``surgery/`` (the recipe's operations, the
patched model) so that neither of them needs the other or the file format: ``checkpoint.py``
knows only the file, ``models/`` only fresh architectures, ``surgery/`` only edits.

Example:
    >>> import tempfile, os, torch
    >>> from neurotomy.checkpoint import ModelMeta, save_checkpoint
    >>> from neurotomy.models import build_model
    >>> model = build_model("lenet5", 1, 10, 8)
    >>> meta = ModelMeta(arch="lenet5", arch_args={"in_channels": 1, "num_classes": 10, "input_size": 8})
    >>> path = save_checkpoint(model, meta, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
    >>> loaded = load_model(path)
    >>> bool(torch.equal(loaded(torch.ones(1, 1, 8, 8)), model.eval()(torch.ones(1, 1, 8, 8))))
    True
"""

from __future__ import annotations

import os

from torch import nn

from neurotomy.loading.checks import check_classifier_output, check_compatible
from neurotomy.loading.checkpoints import PATCHED, build_from_meta, load_checkpoint
from neurotomy.loading.specs import SPEC_FORMS, build_fresh, check_model_spec, model_spec_kind, resolve_model
from neurotomy.loading.weights import load_weights


def load_model(spec: str | os.PathLike, *, weights: str | os.PathLike | None = None, pretrained: bool = False,
               in_channels: int | None = None, num_classes: int | None = None,
               input_size: int | None = None) -> nn.Module:
    """``zoo:NAME``, a checkpoint, ``torchvision:NAME``, ``timm:NAME``, ``path/to/file.py:factory``
    or an architecture name → the model in eval mode, metadata in ``.neurotomy_meta``
    (:func:`neurotomy.loading.specs.resolve_model`).

    Example:
        >>> model = load_model("zoo:lenet5-digits")
        >>> model.neurotomy_meta.arch, model.training
        ('lenet5', False)
    """
    return resolve_model(spec, weights=weights, pretrained=pretrained, in_channels=in_channels,
                         num_classes=num_classes, input_size=input_size)


__all__ = ["PATCHED", "SPEC_FORMS", "build_fresh", "build_from_meta", "check_classifier_output", "check_compatible",
           "check_model_spec", "load_checkpoint", "load_model", "load_weights", "model_spec_kind", "resolve_model"]
