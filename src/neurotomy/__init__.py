"""neurotomy: score every unit of a CNN, then prune, split and explain it.

Example:
    >>> import neurotomy
    >>> model = neurotomy.load_model("zoo:lenet5-digits")
    >>> model.neurotomy_meta.dataset
    'digits'
    >>> neurotomy.attribute is __import__("neurotomy.explain").explain.attribute
    True
"""

__version__ = "0.1.0"

from neurotomy.checkpoint import ModelMeta, load_checkpoint, save_checkpoint  # noqa: E402
from neurotomy.data import load_dataset  # noqa: E402
from neurotomy.errors import NeurotomyError  # noqa: E402
from neurotomy.models import build_model  # noqa: E402
from neurotomy.models.zoo import load_model  # noqa: E402
from neurotomy.train import TrainConfig, evaluate, fit  # noqa: E402

# The actions that pull in heavier libraries (Captum, torch-pruning, matplotlib) load on first use.
_LAZY = {
    "attribute": "neurotomy.explain",          # explain one batch with any method
    "dissect": "neurotomy.jobs.dissect",     # the whole report
    "get_criterion": "neurotomy.scores",       # score units
    "prune_filters": "neurotomy.surgery.filters",
    "split": "neurotomy.surgery.class_modules",      # per-class modules
    "patch": "neurotomy.surgery.patching",     # patch a weak model with a module
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neurotomy' has no attribute {name!r}")


__all__ = ["ModelMeta", "NeurotomyError", "TrainConfig", "attribute", "build_model", "dissect", "evaluate", "fit",
           "get_criterion", "load_checkpoint", "load_dataset", "load_model", "patch", "prune_filters",
           "save_checkpoint", "split"]
