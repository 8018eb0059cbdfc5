"""Model anatomy: the questions every part of neurotomy asks of a model, answered once.

Which layer is the classifier, how many classes, what input shape, which modules a forward pass
runs and in what order, which modules are residual blocks (or, in a plain network such as VGG, conv
blocks; in a transformer, its attention + MLP blocks), how to swap a submodule by name, and how to
run a model in eval mode without losing the caller's training flag.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    >>> classifier_layer(model)[0], num_classes_of(model)
    ('3', 3)
    >>> execution_order(model, torch.zeros(1, 1, 8, 8))
    ['0', '3']
    >>> _ = set_submodule(model, "1", nn.Identity()); type(model[1]).__name__
    'Identity'
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.errors import ModelError
from neurotomy.models.plain import CHANNELWISE, PlainBlock, keeps_size, traced_plain_blocks
from neurotomy.models.residual import ResidualForm, residual_forms
from neurotomy.models.transformer import block_forms, transformer_blocks
from neurotomy.probe import Probe


def classifier_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """The final Linear layer (name, module): its inputs are the penultimate features."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("the model has no Linear classifier; neurotomy needs a model that ends in nn.Linear")
    return linears[-1]


def num_classes_of(model: nn.Module, data: Dataset | None = None) -> int:
    """Number of classes: from the checkpoint metadata, else the dataset, else the last Linear."""
    meta = getattr(model, "neurotomy_meta", None)
    if meta is not None and "num_classes" in meta.arch_args:
        return int(meta.arch_args["num_classes"])
    if data is not None and getattr(data, "classes", None):
        return len(data.classes)
    try:
        return classifier_layer(model)[1].out_features
    except ModelError:
        raise ModelError("cannot tell how many classes the model has; give data with a classes list") from None


def model_input_shape(model: nn.Module, data: Dataset | None = None) -> tuple[int, ...] | None:
    """``(C, H, W)`` of one input: from the checkpoint metadata, else the first image of ``data``."""
    meta = getattr(model, "neurotomy_meta", None)
    if meta is not None and meta.recorded_input_shape is not None:  # a script model's description records none
        return meta.recorded_input_shape
    if data is not None:
        return tuple(data[0][0].shape)
    return None


def require_input_shape(model: nn.Module, data: Dataset | None = None) -> tuple[int, ...]:
    """:func:`model_input_shape`, or an error that says how to supply one."""
    shape = model_input_shape(model, data)
    if shape is None:
        raise ModelError("the model carries no input shape; load it with neurotomy.load_model or pass "
                         "input_shape=(C, H, W)")
    return shape


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` as deployed (BatchNorm on running statistics, dropout off); the caller's
    training flags are restored afterwards, even on error — each module's own, so a BatchNorm the
    caller froze in eval inside a training model stays in eval."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Replace the submodule called ``name`` by ``new`` in place; returns the old one."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def _own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def execution_order(model: nn.Module, inputs: torch.Tensor, modules: list[str] | None = None) -> list[str]:
    """Names of ``modules`` (default: those holding parameters of their own) in the order a
    forward pass on ``inputs[:1]`` runs them (a module used twice is listed at its first use;
    modules the pass never reaches are left out)."""
    names = modules if modules is not None else [n for n, m in model.named_modules() if _own_parameters(m)]
    ran: list[str] = []
    with torch.no_grad(), eval_mode(model), Probe(model, names, on_output=lambda name, _: ran.append(name)):
        model(inputs[:1])
    return list(dict.fromkeys(ran))


def residual_table(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> dict[str, ResidualForm]:
    """The residual blocks by name, in module order, with the shortcut each keeps when removed.

    Measured by what each module computes (:func:`~neurotomy.models.residual.residual_forms`: one
    forward pass at ``input_shape``, default the model's recorded one). A model with no input shape
    is read by its attributes instead: a ``shortcut`` or ``downsample`` branch (our CIFAR ResNets,
    torchvision ResNets) or a ``use_residual`` flag (our MobileNetV2); that reading misses
    torchvision's MobileNet, EfficientNet, ConvNeXt and RegNet blocks.

    Example:
        >>> from neurotomy.models import build_model
        >>> table = residual_table(build_model("resnet20", 1, 10, 28))
        >>> list(table)[:4], table["layer2.0"].shortcut, table["layer2.0"].downsampling
        (['layer1.0', 'layer1.1', 'layer1.2', 'layer2.0'], 'layer2.0.shortcut', True)
    """
    shape = input_shape or model_input_shape(model)
    if shape is not None:
        return residual_forms(model, shape)
    table = {}
    for name, module in model.named_modules():
        if name and (hasattr(module, "shortcut") or hasattr(module, "downsample")
                     or getattr(module, "use_residual", False)):
            branch = next((attr for attr in ("shortcut", "downsample") if _transforms(getattr(module, attr, None))),
                          None)
            table[name] = ResidualForm(name, f"{name}.{branch}" if branch else None, True)
    return table


def _transforms(branch) -> bool:
    """A shortcut branch that changes its input: a module with weights (an identity has none)."""
    return isinstance(branch, nn.Module) and not isinstance(branch, nn.Identity) and any(True for _ in branch.parameters())


def residual_blocks(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[str]:
    """Names of the residual blocks (:func:`residual_table`)."""
    return list(residual_table(model, input_shape))


_ACTIVATIONS = (nn.ReLU, nn.ReLU6)


def _sequential_children(model: nn.Module) -> Iterator[list[tuple[str, nn.Module]]]:
    """Each ``nn.Sequential``'s children as (full name, module), in order."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            yield [(f"{name}.{key}" if name else key, child) for key, child in module._modules.items()]


def _plain_block_at(children: list[tuple[str, nn.Module]], i: int, next_weighted: dict[str, str],
                    classifier: tuple[str, nn.Linear] | None) -> PlainBlock | None:
    """The plain block whose conv is ``children[i]``, or None: a size-keeping conv after an earlier
    conv (the stem reads the image: it is no block), an optional BatchNorm, an activation, then
    only channel-wise pooling up to a dense conv in the same Sequential — or the classifier, when
    that is the next layer with weights and reads exactly the block's channels."""
    conv = children[i][1]
    if not keeps_size(conv) or not any(isinstance(m, nn.Conv2d) for _, m in children[:i]):
        return None
    j = i + 1
    norm = children[j][0] if j < len(children) and isinstance(children[j][1], nn.BatchNorm2d) else None
    j += norm is not None
    if j >= len(children) or not isinstance(children[j][1], _ACTIVATIONS):
        return None
    act = j
    j += 1
    while j < len(children) and isinstance(children[j][1], CHANNELWISE):
        j += 1
    successor = children[j][0] if j < len(children) else next_weighted.get(norm or children[i][0], "")
    if not (j < len(children) and isinstance(children[j][1], nn.Conv2d) and children[j][1].groups == 1):
        # else only the classifier, reading the block's channels (global pooling: C·H·W = C only at 1×1)
        if classifier is None or successor != classifier[0] or classifier[1].in_features != conv.out_channels:
            return None
    return PlainBlock(children[act][0], children[i][0], norm, successor, conv.in_channels, conv.out_channels)


def plain_block_table(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> dict[str, PlainBlock]:
    """Every conv block of a plain network (none when the model has residual blocks), by name.

    Found by following one forward pass at ``input_shape`` (default the model's recorded one:
    :func:`~neurotomy.models.plain.traced_plain_blocks`), so torchvision's ``Conv2dNormActivation``
    stacks and blocks that call ``F.relu`` count too; a model with no input shape is read by its
    layout in ``nn.Sequential`` containers of bare modules (VGG's ``features``). A block counts only
    when its removal is well defined (see :class:`~neurotomy.models.plain.PlainBlock`).

    Example:
        >>> from neurotomy.models import build_model
        >>> table = plain_block_table(build_model("vgg11_bn", 1, 10, 28))
        >>> list(table)[:2], table["features.6"].conv, table["features.6"].successor
        (['features.6', 'features.10'], 'features.4', 'features.8')
    """
    if residual_blocks(model, input_shape):
        return {}
    try:
        classifier: tuple[str, nn.Linear] | None = classifier_layer(model)
    except ModelError:
        classifier = None
    shape = input_shape or model_input_shape(model)
    if shape is not None:
        return traced_plain_blocks(model, shape, classifier[0] if classifier else None)
    weighted = [n for n, m in model.named_modules() if _own_parameters(m)]
    next_weighted = dict(zip(weighted, weighted[1:]))
    table = {}
    for children in _sequential_children(model):
        for i in range(len(children)):
            block = _plain_block_at(children, i, next_weighted, classifier)
            if block is not None:
                table[block.name] = block
    return table


def plain_blocks(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[str]:
    """Names of the conv blocks of a plain network (:func:`plain_block_table`)."""
    return list(plain_block_table(model, input_shape))


def layer_blocks(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[str]:
    """The blocks layer pruning can remove: residual blocks and transformer blocks
    (:func:`~neurotomy.models.transformer.transformer_blocks`), in module order, or in a plain network
    its conv blocks (residual blocks measured at ``input_shape``, default the model's: :func:`residual_table`).
    A residual module that holds transformer blocks or sits inside one (a Swin stage
    with its patch merging) is left out: the transformer blocks are the units.

    Example:
        >>> from neurotomy.models import build_model
        >>> layer_blocks(build_model("vit_tiny"))[:2], layer_blocks(build_model("resnet20"))[:2]
        (['blocks.0', 'blocks.1'], ['layer1.0', 'layer1.1'])
    """
    transformer = transformer_blocks(model)
    if not transformer:
        return residual_blocks(model, input_shape) or plain_blocks(model, input_shape)
    nested = tuple(f"{t}." for t in transformer)
    residual = [b for b in residual_blocks(model, input_shape) if not b.startswith(nested)
                and not any(t.startswith(f"{b}.") for t in transformer)]
    chosen = set(transformer) | set(residual)
    return [name for name, _ in model.named_modules() if name in chosen]


def block_input_module(model: nn.Module, block: str) -> str:
    """The module whose input is the block's input: the block itself, or a plain block's conv."""
    plain = plain_block_table(model).get(block)
    return plain.conv if plain is not None else block


def removable_blocks(model: nn.Module, keep_downsampling: bool = True) -> list[str]:
    """Blocks a layer-pruning rule may remove (by default: not the down-sampling ones, nor in a
    plain network the blocks that change the channel count). Transformer blocks count when they are
    residual (:class:`~neurotomy.models.transformer.BlockForm`), measured at the model's input shape
    when it carries one (else every transformer block; removal checks again)."""
    transformer = transformer_blocks(model)
    if transformer:
        shape = model_input_shape(model)
        forms = block_forms(model, shape, transformer) if shape is not None else {}
        residual = {t for t in transformer if t not in forms or forms[t].residual}
        table = residual_table(model)
        return [b for b in layer_blocks(model) if b in residual or (
            b not in transformer and not (keep_downsampling and table[b].downsampling))]
    residual = residual_table(model)
    if residual:
        return [b for b, form in residual.items() if not (keep_downsampling and form.downsampling)]
    return [name for name, block in plain_block_table(model).items()
            if not (keep_downsampling and block.changes_channels)]


__all__ = ["PlainBlock", "block_input_module", "classifier_layer", "eval_mode", "execution_order", "layer_blocks",
           "model_input_shape", "num_classes_of", "plain_block_table", "plain_blocks", "removable_blocks",
           "require_input_shape", "residual_blocks", "residual_table", "set_submodule"]
