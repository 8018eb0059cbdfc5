"""Concept relevance: the relevance of the input for one output *conditioned on one channel*
(Achtibat et al., "From attribution maps to human-understandable explanations through Concept
Relevance Propagation", Nature Machine Intelligence 2023 — CRP).

CRP conditions a relevance backward pass on a concept θ = channel c of layer l by masking the
relevance of every other channel of l. Our relevance is gradient × input (we have no LRP rules), so
masking another channel's relevance is zeroing its gradient at l's output — done by the probe's
gradient callback (:func:`neurotomy.scores.subspace.relevance_through`) — and the map is x ⊙ ∂y/∂x of
that masked pass. The masked pass is linear in the gradient at l, so the conditional maps of all of
l's channels sum to the plain gradient × input exactly (completeness across channels, which CRP's
LRP version has by conservation). A channel is the special case of a subspace spanned by one
basis vector (:func:`neurotomy.scores.subspace.subspace_heatmaps`).

Channel c is axis 1 of a conv map N × C × H × W and the last axis of tokens, flat features and of a
channels-last map N × H × W × C (timm's Swin, ConvNeXt blocks; read from the module that produced it,
:class:`~neurotomy.models.map_layouts.MapLayouts`), in the relevance and in the masked backward alike.

A channel's relevance for an image is R_c = Σ_p a_{c,p} · ∂y/∂a_{c,p} at l (gradient × activation,
summed over positions): CRP ranks reference images by it ("relevance, not activation", their §
on reference samples); :mod:`neurotomy.jobs.concepts` searches the test set with it.

``attribute(model, x, method="crp", layer=L, channel=c)``: ``layer`` defaults to the last feature map
(as for CAMs), ``channel`` to each image's most relevant channel at that layer.

Example:
    >>> from neurotomy.loading import load_model
    >>> model, x = load_model("zoo:lenet5-digits"), torch.randn(3, 1, 8, 8)
    >>> maps = conditional_relevance(model, x, torch.tensor([0, 1, 2]), "features.3", [0, 5])
    >>> tuple(maps.shape), tuple(channel_relevance(model, x, "features.3").shape)
    ((3, 2, 1, 8, 8), (3, 16))
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from neurotomy.errors import ModelError
from neurotomy.explain.common import ExplainError, default_cam_layer
from neurotomy.explain.methods import register_method
from neurotomy.models.anatomy import eval_mode
from neurotomy.probe import Probe
from neurotomy.models.map_layouts import MapLayouts
from neurotomy.scores.subspace import channel_rows, input_leaf, layout_of, relevance_through


def channel_relevance(model: nn.Module, inputs: torch.Tensor, layer: str,
                      targets: torch.Tensor | None = None) -> torch.Tensor:
    """Each channel's relevance R_c = Σ_positions a · ∂y/∂a at ``layer`` for each image's ``targets``
    logit (``None``: its predicted class), ``N × channels``; one forward and one backward pass."""
    seen: dict[str, torch.Tensor] = {}
    layouts = MapLayouts()  # a channels-last map (Swin, ConvNeXt blocks) has its channels on the last axis

    def on_grad(_: str, output: torch.Tensor, grad: torch.Tensor) -> None:
        layout = layout_of(output, layouts.channels_last.get(layer))
        seen["relevance"] = (channel_rows(output, layout) * channel_rows(grad, layout)).sum(1).detach()

    x = input_leaf(model, inputs)
    with eval_mode(model), layouts.watch(model), Probe(model, [layer], on_grad=on_grad), torch.enable_grad():
        logits = model(x)
        classes = logits.argmax(1) if targets is None else targets.to(logits.device).view(-1)
        torch.autograd.grad(logits.gather(1, classes.view(-1, 1)).sum(), x)
    if "relevance" not in seen:
        raise ModelError(f"layer {layer!r} got no gradient: it does not lie between the input and the logits")
    return seen["relevance"].to(inputs.device)


def conditional_relevance(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, layer: str,
                          channels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """CRP maps ``N × K × C × H × W``: gradient × input of each image's ``targets`` logit with every
    channel of ``layer`` but one zeroed in the backward pass, for each of the K ``channels`` (ints for
    every image, or an ``N × K`` tensor: channels per image)."""
    per_image = torch.as_tensor(channels, dtype=torch.long)
    if per_image.dim() == 1:
        per_image = per_image.expand(inputs.shape[0], -1)
    if per_image.dim() != 2 or per_image.shape[0] != inputs.shape[0]:
        raise ExplainError(f"channels of shape {tuple(per_image.shape)}; give channel indices, or one row per image")
    maps = []
    for k in range(per_image.shape[1]):
        chosen = per_image[:, k]

        def keep_one(grad: torch.Tensor, chosen: torch.Tensor = chosen) -> torch.Tensor:
            width = grad.shape[-1]
            if int(chosen.min()) < 0 or int(chosen.max()) >= width:
                raise ExplainError(f"channel {int(chosen.max() if chosen.max() >= width else chosen.min())} does not "
                                   f"exist: layer {layer!r} has {width} channels (0…{width - 1})")
            mask = torch.nn.functional.one_hot(chosen.to(grad.device), width).to(grad.dtype)
            return grad * mask.view(grad.shape[0], *([1] * (grad.dim() - 2)), width)
        maps.append(relevance_through(model, inputs, targets, layer, keep_one))
    return torch.stack(maps, 1)


@register_method("crp", family="concept", signed=True, input_attribution=True,
                 paper="Achtibat et al., Nature Machine Intelligence 2023 (CRP: gradient × input, the other channels' "
                       "gradient zeroed at the layer)")
def concept_relevance(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, layer: str | None = None,
                      channel: int | None = None) -> torch.Tensor:
    """The input relevance for ``targets`` conditioned on ``channel`` of ``layer`` (``N × C × H × W``);
    ``layer``: default the last feature map; ``channel``: default each image's most relevant one."""
    layer = layer if layer is not None else default_cam_layer(model, inputs)
    relevance = channel_relevance(model, inputs, layer, targets)
    width = relevance.shape[1]
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < width):
        raise ExplainError(f"channel {channel!r} does not exist: layer {layer!r} has {width} channels (0…{width - 1})")
    chosen = relevance.argmax(1) if channel is None else torch.full((inputs.shape[0],), channel, dtype=torch.long)
    return conditional_relevance(model, inputs, targets, layer, chosen.cpu()[:, None])[:, 0]


__all__ = ["channel_relevance", "concept_relevance", "conditional_relevance"]
