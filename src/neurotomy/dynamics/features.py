"""Which layers to look at, and their features over a dataset, batch by batch.

Layers probed by default (Lu et al., ECCV 2022): the stem's activation, the output of every residual
block (every ReLU for plain nets such as VGG), and the penultimate features — the input of the
classifier, named ``"<classifier>:input"``. Features are taken whole and flattened, no pooling.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.probe import Probe, leaf_modules
from neurotomy.scores.base import model_input_shape

INPUT_SUFFIX = ":input"


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of residual blocks: modules with a ``shortcut`` or ``downsample`` branch (our
    CIFAR ResNets, torchvision ResNets) or a ``use_residual`` flag (our MobileNetV2)."""
    names = []
    for name, module in model.named_modules():
        if name and (hasattr(module, "shortcut") or hasattr(module, "downsample")
                     or getattr(module, "use_residual", False)):
            names.append(name)
    return names


def classifier_name(model: nn.Module) -> str:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def default_layers(model: nn.Module) -> list[str]:
    """Stem activation + every residual block (or every ReLU) + the classifier's input."""
    blocks = residual_blocks(model)
    relus = [n for n in leaf_modules(model) if isinstance(dict(model.named_modules())[n], (nn.ReLU, nn.ReLU6))]
    if blocks:
        inside = tuple(b + "." for b in blocks)
        stem = [r for r in relus if not r.startswith(inside)][:1]
        layers = stem + blocks
    else:
        layers = relus
    return layers + [classifier_name(model) + INPUT_SUFFIX]


@torch.no_grad()
def stream_features(model: nn.Module, data: Dataset, layers: list[str], batch_size: int = 500,
                    max_images: int | None = None, indices: torch.Tensor | None = None,
                    shard: tuple[int, int] | None = None, split_batches: bool = False,
                    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Yield ({layer: flattened features (B × D)}, labels) one batch at a time; ``shard`` and
    ``split_batches`` select one process's part (see :func:`neurotomy.data.batches.select_shard`)."""
    modules = [layer.removesuffix(INPUT_SUFFIX) for layer in layers]
    grabbed: dict[str, torch.Tensor] = {}

    def grab(name, module, inputs, output):
        if name + INPUT_SUFFIX in layers:
            grabbed[name + INPUT_SUFFIX] = inputs[0].flatten(1)
        if name in layers:
            grabbed[name] = output.flatten(1)

    subset = data if indices is None else _Subset(data, indices)
    model.eval()
    with Probe(model, sorted(set(modules)), on_module=grab):
        for x, y in iterate_batches(subset, batch_size, max_images=max_images, shard=shard,
                                    split_batches=split_batches):
            grabbed.clear()
            model(x)
            yield {layer: grabbed[layer] for layer in layers}, y


class _Subset(Dataset):
    """Rows ``indices`` of a dataset, keeping the fast in-memory path when there is one."""

    def __new__(cls, data, indices):
        if hasattr(data, "subset"):
            return data.subset(indices)
        return super().__new__(cls)

    def __init__(self, data, indices):
        self.data, self.indices = data, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.data[int(self.indices[i])]


def balanced_indices(targets: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """``per_class`` random indices of each class, interleaved so every batch stays balanced."""
    g = torch.Generator().manual_seed(seed)
    classes = targets.unique()
    picks = []
    for c in classes:
        idx = torch.nonzero(targets == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    n = min(len(p) for p in picks)
    return torch.stack([p[:n] for p in picks], 1).flatten()  # class-interleaved


__all__ = ["INPUT_SUFFIX", "balanced_indices", "classifier_name", "default_layers", "model_input_shape",
           "residual_blocks", "stream_features"]
