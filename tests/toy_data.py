"""Small synthetic datasets whose answer is known, shared by tests of several packages."""

import torch

from neurotomy.data import Normalization, TensorImageDataset

PATCH = (slice(2, 6), slice(2, 6))  # the 16 centre pixels of an 8×8 image carry the label


def patch_dataset(n: int, seed: int) -> TensorImageDataset:
    """Noise everywhere; the class is the sign of a 4×4 centre patch — only those pixels matter."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randn(n, 1, 8, 8, generator=g)
    images[:, 0, PATCH[0], PATCH[1]] += (labels.float() * 2 - 1).view(-1, 1, 1) * 1.5
    return TensorImageDataset(images, labels, ["minus", "plus"], Normalization((0.0,), (1.0,)), "patch")
