"""neurotomy: score every unit of a CNN, then prune, split and explain it.

Example:
    >>> import neurotomy
    >>> model = neurotomy.load_model("zoo:lenet5-digits")
    >>> model.neurotomy_meta.dataset
    'digits'
    >>> neurotomy.attribute is __import__("neurotomy.explain").explain.attribute
    True
    >>> from neurotomy.reconstruct import reconstruct
    >>> neurotomy.reconstruct is reconstruct  # the function, as `neurotomy prune --reconstruct` runs it
    True
"""

from neurotomy.checkpoint import ModelMeta, save_checkpoint
from neurotomy.data import load_dataset
from neurotomy.errors import NeurotomyError
from neurotomy.loading import load_checkpoint, load_model
from neurotomy.models import build_model, register_model
from neurotomy.models.data_fit import check_data_fits
# eager, not lazy: the function shares its module's name, and importing the module (as
# `from neurotomy.reconstruct import reconstruct` does) would otherwise bind neurotomy.reconstruct to it
from neurotomy.reconstruct import reconstruct
from neurotomy.train import TrainConfig, evaluate, fit
from neurotomy.version import __version__

# The actions that pull in heavier libraries (Captum, torch-pruning, matplotlib) load on first use.
_LAZY = {
    "attribute": "neurotomy.explain",          # explain one batch with any method
    "dissect": "neurotomy.jobs.dissect",       # the whole report
    "get_criterion": "neurotomy.scores",       # score units
    "prune_filters": "neurotomy.surgery.filters",
    "split": "neurotomy.jobs.split",           # per-class modules
    "patch": "neurotomy.surgery.patching",     # patch a weak model with a module
    "deploy": "neurotomy.jobs.deploy",         # ONNX (+ int8): accuracy, size, latency, reasons kept
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neurotomy' has no attribute {name!r}")


__all__ = ["ModelMeta", "NeurotomyError", "TrainConfig", "__version__", "attribute", "build_model", "check_data_fits", "deploy", "dissect", "evaluate", "fit",
           "get_criterion", "load_checkpoint", "load_dataset", "load_model", "patch", "prune_filters",
           "reconstruct", "register_model", "save_checkpoint", "split"]
