"""Reference CNNs behind one registry of architectures, models from torchvision, timm and a user's
own file (:mod:`neurotomy.models.sources`), and the anatomy helpers every floor uses.

Each architecture module registers itself on import; this package imports them all, and the
describers that let ``save_checkpoint(model, path)`` record how to rebuild a model built elsewhere.
"""

from neurotomy.models.registry import ARCHITECTURES, build_model, rebuild_model, register_model
# each architecture registers itself on import; this order is the order `neurotomy` lists them in
from neurotomy.models import lenet, vgg, resnet_cifar, mobilenetv2, vit  # noqa: F401,E402,I001
from neurotomy.models import describe  # noqa: F401,E402  (registers the describers)

__all__ = ["ARCHITECTURES", "build_model", "rebuild_model", "register_model"]
