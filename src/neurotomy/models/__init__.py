"""Reference CNNs behind one registry of architectures, and the anatomy helpers every floor uses.

Each architecture module registers itself on import; this package imports them all.
"""

from neurotomy.models.registry import ARCHITECTURES, build_model, register_model
# each architecture registers itself on import; this order is the order `neurotomy` lists them in
from neurotomy.models import lenet, vgg, resnet_cifar, mobilenetv2  # noqa: F401,E402,I001

__all__ = ["ARCHITECTURES", "build_model", "register_model"]
