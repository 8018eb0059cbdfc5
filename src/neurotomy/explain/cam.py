"""The CAM family in torch, batched, on our probe — raw maps kept.

pytorch-grad-cam is the reference (tests compare against it); we re-implement because it moves
every map through numpy and returns only min–max normalised maps, while users and our metrics
need the raw ones, and because batching in torch is faster on our hot path. Like that library, one
base class does the plumbing (observe a layer's activations and gradients, upsample) and each paper
overrides one method:

- Grad-CAM (Selvaraju et al. 2017): channel weight = spatial mean of ∂y_c/∂A.
- Grad-CAM++ (Chattopadhay et al. 2018): weights from second/third powers of the gradient.
- HiResCAM (Draelos & Carin 2020): Σ_k ∂y_c/∂A_k ⊙ A_k, element-wise.
- LayerCAM (Jiang et al. 2021): Σ_k ReLU(∂y_c/∂A_k) ⊙ A_k.
- Score-CAM (Wang et al. 2020): weight = softmax over channels of y_c(x ⊙ upsampled, rescaled A_k).
- Ablation-CAM (Desai & Ramaswamy 2020): weight = (y_c − y_c with channel k zeroed) / y_c.
- Eigen-CAM (Muhammad & Yeasin 2020): projection of the centred activations on their first
  principal component.

Each returns ``N × H × W`` at the input's resolution: the layer map (after ReLU, as every one of
these papers defines it; ``relu=False`` keeps the sign) upsampled bilinearly.

**Vision Transformers.** A layer that outputs a token sequence ``N × tokens × C`` is folded into a
feature map ``N × C × rows × cols`` before any of the above: the leading class/distillation tokens
dropped, the patch tokens laid out row-major on the patch grid, channels = embedding — the
``reshape_transform`` pytorch-grad-cam asks its users to write, here read from the model
(:func:`neurotomy.models.transformer.token_layout`). The default layer of a transformer is the
LayerNorm that feeds its last attention layer (``blocks[-1].norm1`` in timm, ``ln_1`` in
torchvision), pytorch-grad-cam's recommendation: after the last attention only the class token
reaches the logits, so the patch tokens' gradients there are zero. Where that LayerNorm's output is
not such a token sequence — windowed attention (MaxViT: windows × positions; Swin: a channels-last
map) — the default is the last spatial feature map, as for a CNN. A channels-last map ``N × h × w × C``
(timm's Swin throughout, ConvNeXt's LayerNorm and MLP; told apart by the module that made it, see
:class:`neurotomy.models.map_layouts.MapLayouts`) is permuted to ``N × C × h × w`` first — Swin's
``reshape_transform`` in pytorch-grad-cam's docs. Ablation-CAM on tokens or a channels-last map zeroes
channel k at every position, as pytorch-grad-cam's ``AblationLayerVit`` does.

Each class carries its ``name`` and ``paper`` and registers itself with :func:`register_cam`, so a
new CAM method is one class in this file; it is listed after the ones above it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy import validate
from neurotomy.errors import ModelError
from neurotomy.explain.common import (ExplainError, channels_first, class_scores, default_cam_layer,
                                      forward, upsample)
from neurotomy.explain.methods import register_method
from neurotomy.models.map_layouts import MapLayouts
from neurotomy.models.transformer import attention_sites, token_layout
from neurotomy.probe import Probe


def observe_layer(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, layer: str,
                  gradients: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, bool]:
    """Activations ``A`` of ``layer`` as it outputs them, ``∂y_c/∂A`` for each image's own target, the logits,
    and whether ``A`` is a channels-last map N × h × w × C (:class:`~neurotomy.models.map_layouts.MapLayouts`,
    read in the same forward pass)."""
    seen: dict[str, torch.Tensor] = {}
    layouts = MapLayouts()

    def keep(name: str, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        layouts(name, module, args, output)
        if name == layer:
            seen.setdefault("A", output)  # a module called twice: the first call is the layer's map

    names = list(dict.fromkeys([n for n, _ in model.named_modules() if n] + [layer]))
    with torch.set_grad_enabled(gradients), Probe(model, names, on_module=keep):
        x = inputs.detach().clone().requires_grad_(gradients)
        logits = forward(model, x)
    activations = seen["A"]
    grads = None
    if gradients:
        # Each image's score depends only on its own activations (eval mode), so the gradient of
        # the sum gives every image's gradient in one backward pass.
        grads, = torch.autograd.grad(class_scores(logits, targets).sum(), activations)
    return activations.detach(), grads, logits.detach(), layouts.channels_last.get(layer, False)


def transformer_cam_layer(model: nn.Module) -> str | None:
    """The LayerNorm feeding a transformer's last attention layer — the last LayerNorm registered before
    the attention module in the same parent block (``norm1``, ``ln_1``); None for a CNN or a block
    without one."""
    sites = attention_sites(model)
    if not sites:
        return None
    parent, _, child = sites[-1].name.rpartition(".")
    norm = None
    for name, module in model.get_submodule(parent).named_children():
        if name == child:
            break
        if isinstance(module, nn.LayerNorm):
            norm = name
    return None if norm is None else f"{parent}.{norm}" if parent else norm


def cam_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """The default CAM layer: for a transformer :func:`transformer_cam_layer` where its output is the
    model's token sequence, otherwise the last module with a spatial output
    (:func:`neurotomy.explain.common.default_cam_layer`).

    Example:
        >>> from neurotomy.models import build_model
        >>> vit = build_model("vit_tiny", 1, 10, 28, depth=2, dim=8, num_heads=2, mlp_hidden=8)
        >>> cam_layer(vit, torch.zeros(1, 1, 28, 28))
        'blocks.1.norm1'
    """
    norm = transformer_cam_layer(model)
    if norm is not None and _folds_onto_patch_grid(model, inputs, norm):
        return norm
    return default_cam_layer(model, inputs)


def _folds_onto_patch_grid(model: nn.Module, inputs: torch.Tensor, layer: str) -> bool:
    """Whether ``layer`` outputs the plain token sequence ``1 × (prefix + rows·cols) × C`` that
    :func:`token_feature_map` folds, for one image: not a windowed one (MaxViT's windows × positions)
    nor a channels-last map (Swin's h × w × C), whose fold would scramble the image."""
    seen: dict[str, torch.Tensor] = {}
    with torch.no_grad(), Probe(model, [layer], on_output=lambda name, out: seen.setdefault("A", out)):
        forward(model, inputs[:1])
    tokens = seen.get("A")
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 3 or tokens.shape[0] != 1:
        return False
    try:
        (rows, cols), prefix = token_layout(model, tuple(inputs.shape[1:]))
    except ModelError:  # no patch embedding to read a grid from
        return False
    return tokens.shape[1] == prefix + rows * cols


def token_feature_map(model: nn.Module, inputs: torch.Tensor, layer: str, tokens: torch.Tensor) -> torch.Tensor:
    """A transformer layer's token sequence ``N × tokens × C`` as a feature map ``N × C × rows × cols``:
    prefix tokens dropped, patch tokens folded row-major onto the model's patch grid.

    Example:
        >>> from neurotomy.models import build_model
        >>> vit = build_model("vit_tiny", 1, 10, 28, depth=1, dim=8, num_heads=2, mlp_hidden=8)
        >>> token_feature_map(vit, torch.zeros(2, 1, 28, 28), "blocks.0", torch.zeros(2, 50, 8)).shape
        torch.Size([2, 8, 7, 7])
    """
    shape = tuple(tokens.shape)
    if not attention_sites(model):
        raise ExplainError(f"layer {layer!r} outputs shape {shape}; CAM methods need a conv feature map N×C×h×w "
                           "(or a transformer's tokens N×tokens×C) — pick a conv layer or block")
    layout = token_layout(model, tuple(inputs.shape[1:]))
    (rows, cols), prefix = layout
    if tokens.shape[0] != inputs.shape[0] or tokens.shape[1] != prefix + rows * cols:
        raise ExplainError(f"layer {layer!r} outputs shape {shape}, not the model's {prefix} prefix + {rows}×{cols} "
                           "patch tokens per image; pick a layer inside the transformer blocks (e.g. a block or "
                           "its first LayerNorm)")
    return tokens[:, prefix:].transpose(1, 2).reshape(shape[0], shape[2], rows, cols)


def feature_map(model: nn.Module, inputs: torch.Tensor, layer: str, output: torch.Tensor,
                channels_last: bool) -> torch.Tensor:
    """A layer's output (or its gradient) as the ``N × C × h × w`` map the CAM formulas take: a transformer's
    tokens folded onto the patch grid (:func:`token_feature_map`), a channels-last map ``N × h × w × C``
    permuted (what the ``reshape_transform`` users write for Swin does), a conv map as it is.

    Example:
        >>> feature_map(nn.Identity(), torch.zeros(1, 3, 8, 8), "x", torch.zeros(1, 2, 4, 5), True).shape
        torch.Size([1, 5, 2, 4])
    """
    if output.dim() == 3:
        return token_feature_map(model, inputs, layer, output)
    return channels_first(output, channels_last)


def run_with_layer_output(model: nn.Module, inputs: torch.Tensor, layer: str, replace) -> torch.Tensor:
    """Logits of ``inputs`` when ``layer``'s output is replaced by ``replace(output)``."""
    with torch.no_grad(), Probe(model, [layer], on_output=lambda name, out: replace(out)):
        return forward(model, inputs)


class CAM:
    """Plumbing shared by the family. Subclasses override :meth:`channel_weights` or :meth:`layer_map`.

    Example:
        >>> from neurotomy.models import build_model
        >>> model = build_model("resnet20", 1, 10, 28).eval()
        >>> GradCAM(layer="layer3")(model, torch.randn(2, 1, 28, 28), torch.tensor([0, 1])).shape
        torch.Size([2, 28, 28])
    """

    name = ""
    paper = ""
    uses_gradients = True

    def __init__(self, layer: str | None = None, relu: bool = True, batch_size: int = 128) -> None:
        self.layer, self.relu, self.batch_size = layer, relu, batch_size
        self.channels_last = False  # set by each call: the layer's raw output is N × h × w × C

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        layer = self.layer or cam_layer(model, inputs)
        activations, grads, logits, self.channels_last = observe_layer(model, inputs, targets, layer,
                                                                       self.uses_gradients)
        # tokens folded onto the patch grid, channels-last maps permuted: N × C × h × w from here on
        activations = feature_map(model, inputs, layer, activations, self.channels_last)
        grads = None if grads is None else feature_map(model, inputs, layer, grads, self.channels_last)
        if activations.dim() != 4:
            raise ExplainError(f"layer {layer!r} outputs shape {tuple(activations.shape)}; CAM methods "
                               "need a conv feature map N×C×h×w — pick a conv layer or block")
        cam = self.layer_map(model, inputs, targets, layer, activations, grads, logits)
        if self.relu:
            cam = cam.clamp(min=0)
        return upsample(cam, tuple(inputs.shape[-2:]))

    def layer_map(self, model, inputs, targets, layer, activations, grads, logits) -> torch.Tensor:
        weights = self.channel_weights(model, inputs, targets, layer, activations, grads, logits)
        return (weights[:, :, None, None] * activations).sum(1)

    def channel_weights(self, model, inputs, targets, layer, activations, grads, logits) -> torch.Tensor:
        raise NotImplementedError


def register_cam(cls: type[CAM]) -> type[CAM]:
    """Class decorator: register a :class:`CAM` subclass as the attribution method ``cls.name``
    (family ``cam``, maps ≥ 0, ``cls.paper``) with options ``layer``, ``relu`` and ``batch_size``."""
    def compute(model, inputs, targets, *, layer: str | None = None, relu: bool = True, batch_size: int = 128):
        batch_size = validate.positive_int(batch_size, "batch_size")
        return cls(layer=layer, relu=relu, batch_size=batch_size)(model, inputs, targets).detach()

    register_method(cls.name, family="cam", signed=False, paper=cls.paper)(compute)
    return cls


@register_cam
class GradCAM(CAM):
    name = "gradcam"
    paper = "Selvaraju et al., ICCV 2017"

    def channel_weights(self, model, inputs, targets, layer, activations, grads, logits):
        return grads.mean((2, 3))


@register_cam
class GradCAMPlusPlus(CAM):
    name = "gradcam_pp"
    paper = "Chattopadhay et al., WACV 2018"

    def channel_weights(self, model, inputs, targets, layer, activations, grads, logits):
        # Chattopadhay et al. eq. 19 with exp(S) folded into the gradient powers, as the authors' code does.
        g2, g3 = grads ** 2, grads ** 3
        alpha = g2 / (2 * g2 + activations.sum((2, 3), keepdim=True) * g3 + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp(min=0) * alpha).sum((2, 3))


@register_cam
class HiResCAM(CAM):
    name = "hirescam"
    paper = "Draelos & Carin, 2020"

    def layer_map(self, model, inputs, targets, layer, activations, grads, logits):
        return (grads * activations).sum(1)


@register_cam
class LayerCAM(CAM):
    name = "layercam"
    paper = "Jiang et al., IEEE TIP 2021"

    def layer_map(self, model, inputs, targets, layer, activations, grads, logits):
        return (grads.clamp(min=0) * activations).sum(1)


@register_cam
class ScoreCAM(CAM):
    name = "scorecam"
    paper = "Wang et al., CVPR-W 2020"
    uses_gradients = False

    def channel_weights(self, model, inputs, targets, layer, activations, grads, logits):
        n, c = activations.shape[:2]
        # Wang et al. §3.2: each channel, upsampled and rescaled to [0, 1], masks the input
        # (align_corners=True is what the reference library's UpsamplingBilinear2d does).
        masks = F.interpolate(activations, size=inputs.shape[-2:], mode="bilinear", align_corners=True)
        flat = masks.flatten(2)
        lo, hi = flat.amin(2)[..., None, None], flat.amax(2)[..., None, None]
        masks = (masks - lo) / (hi - lo + 1e-8)
        scores = torch.empty(n, c, dtype=logits.dtype, device=logits.device)  # the logits' own dtype (float64 too)
        with torch.no_grad():
            for i in range(n):
                masked = inputs[i][None] * masks[i][:, None]  # C × channels × H × W
                for start in range(0, c, self.batch_size):
                    chunk = masked[start:start + self.batch_size]
                    scores[i, start:start + len(chunk)] = forward(model, chunk)[:, targets[i]]
        return scores.softmax(1).to(activations)


@register_cam
class AblationCAM(CAM):
    name = "ablationcam"
    paper = "Desai & Ramaswamy, WACV 2020"
    uses_gradients = False

    def channel_weights(self, model, inputs, targets, layer, activations, grads, logits):
        n, c = activations.shape[:2]
        original = class_scores(logits, targets)
        ablated = torch.empty(n, c, dtype=logits.dtype, device=logits.device)  # the logits' own dtype (float64 too)
        for i in range(n):
            for start in range(0, c, self.batch_size):
                channels = torch.arange(start, min(c, start + self.batch_size))
                # Desai & Ramaswamy: set channel k of the layer to zero, one copy of the image per k.
                keep = torch.ones(len(channels), c, 1, 1, dtype=activations.dtype, device=activations.device)
                keep[torch.arange(len(channels)), channels] = 0
                copies = inputs[i][None].expand(len(channels), *inputs.shape[1:])

                def zero(a: torch.Tensor, keep=keep) -> torch.Tensor:
                    if a.dim() == 3 or self.channels_last:  # tokens, or N × h × w × C: channel k at every position
                        return a * keep.view(len(keep), *[1] * (a.dim() - 2), c)
                    return a * keep
                out = run_with_layer_output(model, copies, layer, zero)
                ablated[i, channels] = out[:, targets[i]]
        return ((original[:, None] - ablated.to(original)) / original[:, None]).to(activations)


@register_cam
class EigenCAM(CAM):
    name = "eigencam"
    paper = "Muhammad & Yeasin, IJCNN 2020"
    uses_gradients = False

    def layer_map(self, model, inputs, targets, layer, activations, grads, logits):
        n, c, h, w = activations.shape
        points = activations.flatten(2).transpose(1, 2)  # N × positions × C
        centred = points - points.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        projection = (centred @ vh[:, 0, :, None]).squeeze(-1)
        # An SVD's sign is arbitrary; orient each map to agree with the summed activation so that
        # "hot" means "strongly active" (the reference library leaves the sign to LAPACK).
        sign = torch.sign((projection * points.sum(2)).sum(1, keepdim=True))
        sign[sign == 0] = 1
        return (projection * sign).view(n, h, w)

