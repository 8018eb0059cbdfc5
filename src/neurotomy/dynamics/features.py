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
from neurotomy.device import model_device, to_device
from neurotomy.data.subsets import IndexedSubset
from neurotomy.probe import Probe, leaf_modules
from neurotomy.models.anatomy import classifier_layer, residual_blocks

INPUT_SUFFIX = ":input"


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
    return layers + [classifier_layer(model)[0] + INPUT_SUFFIX]


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

    subset = data if indices is None else IndexedSubset(data, indices)
    model.eval()
    where = model_device(model)  # batches follow the model's device; features come back on the CPU
    with Probe(model, sorted(set(modules)), on_module=grab):
        for x, y in iterate_batches(subset, batch_size, max_images=max_images, shard=shard,
                                    split_batches=split_batches):
            grabbed.clear()
            model(to_device(where, x))
            yield {layer: grabbed[layer].cpu() for layer in layers}, y


__all__ = ["INPUT_SUFFIX", "default_layers", "stream_features"]
