"""Which layers to look at, and their features over a dataset, batch by batch.

Layers probed by default (Lu et al., ECCV 2022): the stem's activation, the output of every residual
block (every ReLU for plain nets such as VGG; in a net that calls ``F.relu``, every module whose
output is such a call's, or ``"<module>:activated"`` — that module's output after the call — where
the call is made in the model's own forward), and the penultimate features — the input of the
classifier, named ``"<classifier>:input"``. Features are taken whole and flattened, no pooling.

A transformer's block outputs are token sequences; a *view* suffix says which vector stands for an
image: ``"blocks.3:cls"`` is the class token (what the classifier reads), ``"blocks.3:patches"`` the
mean of the patch tokens. Its default layers are every block's class token (its patch-token mean
when the model has no class token, as in Swin) and the classifier's input.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.device import model_device, to_device
from neurotomy.data.subsets import IndexedSubset
from neurotomy.errors import ModelError
from neurotomy.probe import FunctionProbe, Probe, leaf_modules
from neurotomy.models.activations import ACTIVATED, ACTIVATION_FUNCTIONS, activation_sites
from neurotomy.models.anatomy import classifier_layer, eval_mode, model_input_shape, residual_blocks
from neurotomy.models.transformer import token_layout, transformer_blocks

INPUT_SUFFIX = ":input"
TOKEN_VIEWS = (":cls", ":patches")


def split_view(layer: str) -> tuple[str, str]:
    """``"blocks.3:cls"`` → ``("blocks.3", ":cls")``; a name without a view → ``(name, "")``.

    Example:
        >>> split_view("blocks.3:patches"), split_view("head:input"), split_view("bn1:activated")
        (('blocks.3', ':patches'), ('head', ':input'), ('bn1', ':activated'))
    """
    for suffix in (INPUT_SUFFIX, ACTIVATED, *TOKEN_VIEWS):
        if layer.endswith(suffix):
            return layer.removesuffix(suffix), suffix
    return layer, ""


def _prefix_tokens(model: nn.Module, shape: tuple[int, ...] | None) -> int:
    try:
        return token_layout(model, shape).prefix_tokens if shape is not None else 0
    except ModelError:  # a layout that cannot be read: no class token to take
        return 0


def token_view(output: torch.Tensor, view: str, prefix_tokens: int) -> torch.Tensor:
    """One vector per image from a block's token output: the first (class) token for ``":cls"``,
    the mean of the patch tokens for ``":patches"`` (every position but the batch and channel
    axes, so Swin's ``(batch, rows, cols, channels)`` maps work too)."""
    if view == ":cls":
        return output[:, 0]
    patches = output[:, prefix_tokens:] if output.dim() == 3 else output
    return patches.flatten(1, -2).mean(1)


def default_layers(model: nn.Module, view: str | None = None) -> list[str]:
    """Stem activation + every residual block (or every ReLU) + the classifier's input; for a
    transformer every block's ``view`` (default ``":cls"``, or ``":patches"`` without a class token)
    + the classifier's input. A model without ReLU modules that records its input shape has its
    activations found by one forward pass instead (:func:`~neurotomy.models.activations.activation_sites`)."""
    # a block kept in an nn.ModuleDict / ModuleList is driven by its parent's forward, never called
    # itself: no hook sees its output, so it cannot be probed (the model is read as a plain one)
    blocks = [b for b in transformer_blocks(model)
              if not isinstance(model.get_submodule(b), (nn.ModuleDict, nn.ModuleList))]
    if blocks:
        if view is None:
            view = ":cls" if _prefix_tokens(model, model_input_shape(model)) else ":patches"
        return [b + view for b in blocks] + [classifier_layer(model)[0] + INPUT_SUFFIX]
    blocks = residual_blocks(model)
    relus = [n for n in leaf_modules(model) if isinstance(dict(model.named_modules())[n], (nn.ReLU, nn.ReLU6))]
    shape = model_input_shape(model)
    if not relus and shape is not None:  # activations called as functions: the modules that end in one
        with eval_mode(model):
            relus = activation_sites(model, torch.zeros(1, *shape, device=model_device(model)))
    if blocks:
        inside = tuple(b + "." for b in blocks)
        stem = [r for r in relus if not r.startswith(inside)][:1]
        layers = stem + blocks
    else:
        layers = relus
    return layers + [classifier_layer(model)[0] + INPUT_SUFFIX]


@contextmanager
def reading(model: nn.Module, layers: list[str], on_feature: Callable[[str, torch.Tensor], None],
            prefix_tokens: int = 0) -> Iterator[None]:
    """While inside, every forward pass of ``model`` hands ``on_feature(layer, tensor)`` each of
    ``layers`` as it is computed: a module's output, ``":input"`` its input, ``":cls"`` /
    ``":patches"`` a token view, ``":activated"`` what the first activation function called on the
    module's output returned. The one place that reads layers by these names."""
    modules = sorted({split_view(layer)[0] for layer in layers})
    wanted = set(layers)
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # id → (module, output) awaiting its activation

    def grab(name, module, inputs, output):
        if name + INPUT_SUFFIX in wanted:
            on_feature(name + INPUT_SUFFIX, inputs[0])
        if name in wanted:
            on_feature(name, output)
        for view in TOKEN_VIEWS:
            if name + view in wanted:
                on_feature(name + view, token_view(output, view, prefix_tokens))
        if name + ACTIVATED in wanted and isinstance(output, torch.Tensor):
            produced[id(output)] = (name, output)

    def activated(_, out: torch.Tensor, read) -> None:
        name, output = produced.get(id(read), (None, None))
        if name is not None and output is read:
            del produced[id(read)]
            on_feature(name + ACTIVATED, out)

    with ExitStack() as stack:
        stack.enter_context(Probe(model, modules, on_module=grab))
        if any(split_view(layer)[1] == ACTIVATED for layer in layers):
            stack.enter_context(FunctionProbe(ACTIVATION_FUNCTIONS, activated, with_input=True))
            # each pass starts afresh: a pass's outputs that no activation read are not held
            stack.enter_context(Probe(model, [""], on_enter=lambda *_: produced.clear()))
            stack.callback(produced.clear)
        yield


@torch.no_grad()
def stream_features(model: nn.Module, data: Dataset, layers: list[str], batch_size: int = 500,
                    max_images: int | None = None, indices: torch.Tensor | None = None,
                    shard: tuple[int, int] | None = None, split_batches: bool = False,
                    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Yield ({layer: flattened features (B × D)}, labels) one batch at a time; ``shard`` and
    ``split_batches`` select one process's part (see :func:`neurotomy.data.batches.select_shard`)."""
    grabbed: dict[str, torch.Tensor] = {}
    prefix = _prefix_tokens(model, model_input_shape(model, data)) if any(
        split_view(layer)[1] in TOKEN_VIEWS for layer in layers) else 0
    subset = data if indices is None else IndexedSubset(data, indices)
    model.eval()
    where = model_device(model)  # batches follow the model's device; features come back on the CPU

    def grab(layer: str, features: torch.Tensor) -> None:
        grabbed[layer] = features.flatten(1)  # a module called twice: its last output, as a hook sees it

    with reading(model, layers, grab, prefix):
        for x, y in iterate_batches(subset, batch_size, max_images=max_images, shard=shard,
                                    split_batches=split_batches):
            grabbed.clear()
            model(to_device(where, x))
            missing = [layer for layer in layers if layer not in grabbed]
            if missing and split_view(missing[0])[1] == ACTIVATED:
                raise ModelError(f"layer {missing[0]}: no activation function is called on the output of "
                                 f"{split_view(missing[0])[0]} in the model's forward pass; choose another layer")
            if missing:
                raise ModelError(f"layer {missing[0]} never runs as a module in the model's forward pass (a container "
                                 "such as nn.ModuleDict driven by its parent's forward), so its output cannot be "
                                 "read; choose layers that are called")
            yield {layer: grabbed[layer].cpu() for layer in layers}, y


__all__ = ["INPUT_SUFFIX", "TOKEN_VIEWS", "default_layers", "reading", "split_view", "stream_features", "token_view"]
