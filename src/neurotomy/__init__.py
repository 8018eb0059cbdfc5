"""neurotomy: score every unit of a CNN, then prune, split and explain it.

Example:
    >>> import neurotomy
    >>> model = neurotomy.load_model("zoo:lenet5-digits")
    >>> model.neurotomy_meta.dataset
    'digits'
"""

__version__ = "0.1.0"

from neurotomy.checkpoint import ModelMeta, load_checkpoint, save_checkpoint  # noqa: E402
from neurotomy.data import load_dataset  # noqa: E402
from neurotomy.errors import NeurotomyError  # noqa: E402
from neurotomy.models import build_model  # noqa: E402
from neurotomy.models.zoo import load_model  # noqa: E402
from neurotomy.train import TrainConfig, evaluate, fit  # noqa: E402

__all__ = ["ModelMeta", "NeurotomyError", "TrainConfig", "build_model", "evaluate", "fit",
           "load_checkpoint", "load_dataset", "load_model", "save_checkpoint"]
