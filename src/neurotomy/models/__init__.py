"""Reference CNNs and the zoo of shipped trained weights."""

from neurotomy.models.registry import ARCHITECTURES, build_model

__all__ = ["ARCHITECTURES", "build_model"]
