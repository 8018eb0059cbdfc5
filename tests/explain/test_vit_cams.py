"""The CAM family on Vision Transformers, with the token → grid reshape read from the model: against
pytorch-grad-cam given its documented ViT ``reshape_transform`` and target layer, and against the
papers' formulas by hand; then the metrics (deletion/insertion, the randomisation sanity check,
same-reasons agreement) on ViT maps, unchanged."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from neurotomy.explain import METHODS, ExplainError, attribute, normalize
from neurotomy.explain.cam import cam_layer, transformer_cam_layer
from neurotomy.explain.common import default_cam_layer
from neurotomy.models.map_layouts import computes_over_last_axis
from neurotomy.explain.metrics import cascading_randomization
from neurotomy.explain.metrics.sanity import execution_blocks
from neurotomy.explain.rating import compare_reasons, explainer, rate_explanations
from neurotomy.models import build_model
from tests.explain.vit_cases import images, tiny_timm_vit, tiny_torchvision_vit, tiny_vit

REFERENCE = {"gradcam": GradCAM, "gradcam_pp": GradCAMPlusPlus, "hirescam": HiResCAM, "layercam": LayerCAM,
             "scorecam": ScoreCAM}


def vit_reshape_transform(grid):
    """pytorch-grad-cam's ViT tutorial (docs: vision_transformers.md): drop the class token, fold the
    patch tokens to height × width, channels first."""
    def reshape_transform(tensor, height=grid[0], width=grid[1]):
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)
    return reshape_transform


CASES = {  # model, image shape, patch grid, the last block's first LayerNorm (the tutorial's target layer)
    "vit_tiny": (tiny_vit, (1, 28, 28), (7, 7), "blocks.2.norm1"),
    "timm": (tiny_timm_vit, (3, 32, 32), (4, 4), "blocks.1.norm1"),
}


def token_activations_and_gradients(model, layer, x, targets):
    """The layer's tokens and ∂y_c/∂tokens by a plain hook."""
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda mod, inp, out: seen.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    grad, = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), seen[0])
    return seen[0].detach(), grad, logits.detach()


def fold(tokens, grid):
    return tokens[:, 1:].reshape(len(tokens), *grid, tokens.shape[-1]).permute(0, 3, 1, 2)


def up(maps, size):
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_token_cams_equal_pytorch_grad_cam_with_its_reshape_transform(method, case):
    build, shape, grid, layer = CASES[case]
    model, x, t = build(), images(3, shape), torch.tensor([0, 4, 9])
    with REFERENCE[method](model=model, target_layers=[model.get_submodule(layer)],
                           reshape_transform=vit_reshape_transform(grid)) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t]))
    ours = attribute(model, x, t, method=method)  # no layer, no reshape: both read from the model
    assert ours.shape == theirs.shape == (3, *shape[1:])
    assert normalize(ours).std() > 0.1
    torch.testing.assert_close(normalize(ours), normalize(theirs), atol=2e-4, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_raw_token_maps_equal_the_formulas_by_hand(case):
    build, shape, grid, layer = CASES[case]
    model, x, t = build(), images(3, shape), torch.tensor([0, 4, 9])
    tokens, grads, logits = token_activations_and_gradients(model, layer, x, t)
    a, g = fold(tokens, grid), fold(grads, grid)
    size = tuple(shape[1:])
    by_hand = {"gradcam": (g.mean((2, 3), keepdim=True) * a).sum(1), "hirescam": (g * a).sum(1),
               "layercam": (g.clamp(min=0) * a).sum(1)}
    # Ablation-CAM: channel k of the layer zeroed in every token (pytorch-grad-cam's AblationLayerVit)
    y = logits.gather(1, t[:, None])
    drops = []
    for k in range(tokens.shape[-1]):
        def zero_k(mod, inp, out, k=k):
            out = out.clone()
            out[..., k] = 0
            return out
        handle = model.get_submodule(layer).register_forward_hook(zero_k)
        try:
            with torch.no_grad():
                drops.append((y - model(x).gather(1, t[:, None]))[:, 0] / y[:, 0])
        finally:
            handle.remove()
    by_hand["ablationcam"] = (torch.stack(drops, 1)[:, :, None, None] * a).sum(1)
    for method, cam in by_hand.items():
        want = up(cam.clamp(min=0), size)
        assert float(want.amax()) > 0
        torch.testing.assert_close(attribute(model, x, t, method=method), want,
                                   atol=1e-5 * float(want.abs().max()), rtol=1e-4)


def test_default_layer_is_the_layernorm_before_the_last_attention():
    assert cam_layer(tiny_vit(), images(1, (1, 28, 28))) == "blocks.2.norm1"
    assert cam_layer(tiny_timm_vit(), images(1, (3, 32, 32))) == "blocks.1.norm1"
    assert cam_layer(tiny_torchvision_vit(), images(1, (3, 32, 32))) == "encoder.layers.encoder_layer_1.ln_1"
    cnn, x = build_model("resnet20", 1, 10, 28).eval(), images(1, (1, 28, 28))
    assert cam_layer(cnn, x) == default_cam_layer(cnn, x) == "layer3"


@pytest.fixture(scope="module")
def one_thread():
    # many small ops: two threads on a busy two-core machine are far slower than one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def windowed(one_thread):
    """Random-init windowed transformers at their smallest sizes, with one image each: the LayerNorm before
    their last attention outputs windows × positions × C (MaxViT) or a channels-last h × w × C map (Swin)."""
    from neurotomy.loading import load_model

    models = {}
    for spec, size in (("torchvision:maxvit_t", 224), ("torchvision:swin_t", 64)):
        torch.manual_seed(0)
        models[spec] = (load_model(spec, in_channels=3, num_classes=10, input_size=size).eval(),
                        torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)))
    return models


@pytest.mark.parametrize("spec,norm,layer", [
    ("torchvision:maxvit_t", "blocks.3.layers.1.layers.grid_attention.attn_layer.0", "blocks.3"),
    ("torchvision:swin_t", "features.7.1.norm1", "permute"),  # Permute → N × C × h × w before the pooling
])
def test_windowed_transformers_default_to_their_last_feature_map(windowed, spec, norm, layer):
    model, x = windowed[spec]
    assert transformer_cam_layer(model) == norm  # a candidate, refused: its output does not fold to the grid
    seen = []
    handle = model.get_submodule(norm).register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    assert len(seen[0]) == 4  # not N × tokens × C: MaxViT (1, windows, positions, C), Swin (1, h, w, C)
    assert cam_layer(model, x) == default_cam_layer(model, x) == layer
    ours = attribute(model, x, torch.tensor([3]), method="gradcam")
    assert ours.shape == (1, *x.shape[-2:]) and bool(torch.isfinite(ours).all())
    assert float(ours.amax() - ours.amin()) > 0.05 * float(ours.amax()) > 0  # not constant
    # the reference library at the same layer, no reshape: a channels-first map
    with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(3)]))
    torch.testing.assert_close(normalize(ours), normalize(theirs), atol=2e-4, rtol=0)


@pytest.mark.parametrize("build,shape,layer", [
    (tiny_vit, (1, 28, 28), "blocks.1"),  # a block's output: tokens too
    (tiny_torchvision_vit, (3, 32, 32), "encoder.layers.encoder_layer_1.ln_1"),
    (tiny_torchvision_vit, (3, 32, 32), None),
])
def test_every_cam_runs_on_tokens(build, shape, layer):
    model, x = build(), images(2, shape)
    for method in METHODS.names(family="cam"):
        maps = attribute(model, x, method=method, layer=layer)
        assert maps.shape == (2, *shape[1:]) and bool(torch.isfinite(maps).all()) and float(maps.amax()) > 0


def test_a_layer_without_tokens_or_map_is_refused():
    with pytest.raises(ExplainError, match="layer 'head' outputs shape \\(2, 10\\)"):
        attribute(tiny_vit(), images(2, (1, 28, 28)), method="gradcam", layer="head")


def test_metrics_run_unchanged_on_vit_maps():
    vit, x = tiny_vit(), images(4, (1, 28, 28))
    rated = rate_explanations(vit, x, methods=["rollout", "gradcam"], metrics=["deletion", "insertion"], steps=7,
                              quiet=True)
    for method in ("rollout", "gradcam"):
        for metric in ("deletion", "insertion"):
            detail = rated["details"][method][metric]
            assert 0.0 <= rated["scores"][method][metric] <= 1.0
            assert len(detail["fractions"]) == 8 and detail["fractions"][-1] == 1.0
    # Model randomisation, output first, over every block — the root's own bare parameters (class
    # token, position embedding) included: they are re-drawn, the module has no reset_parameters()
    blocks = execution_blocks(vit, x)
    assert blocks[-1] == ["head"] and blocks[0] == [""]
    steps = {m: cascading_randomization(vit, x, explainer(m), quiet=True)["steps"]
             for m in ("rollout", "gradcam")}
    assert steps["rollout"][-1]["block"] == ""
    # rollout reads only the attention: a random head or last MLP leaves it unchanged, a random
    # attention layer does not; Grad-CAM changes with the head already
    assert steps["rollout"][0]["block"] == "head" and steps["rollout"][0]["spearman_abs"] == pytest.approx(1.0)
    first_attention = next(i for i, s in enumerate(steps["rollout"]) if s["block"].endswith("attn.qkv"))
    assert all(s["spearman_abs"] == pytest.approx(1.0) for s in steps["rollout"][:first_attention])
    assert steps["rollout"][first_attention]["spearman_abs"] < 0.9
    assert steps["gradcam"][0]["spearman_abs"] < 0.9
    # same-reasons agreement: a model agrees with itself, and a changed model less
    changed = copy.deepcopy(vit)
    with torch.no_grad():
        changed.blocks[1].attn.qkv.weight[:32].mul_(-1.0)  # negated queries: attention logits negated
    same = compare_reasons(vit, vit, x, methods=["rollout", "gradcam"], quiet=True)
    moved = compare_reasons(vit, changed, x, methods=["rollout", "gradcam"], quiet=True)
    for method in ("rollout", "gradcam"):
        assert same["methods"][method]["spearman"] == pytest.approx(1.0)
        assert same["methods"][method]["iou"] == pytest.approx(1.0)
        assert moved["methods"][method]["spearman"] < 0.95
    assert np.isfinite([moved["methods"][m]["iou"] for m in ("rollout", "gradcam")]).all()


def nhwc_to_nchw(tensor):
    """The ``reshape_transform`` users write for Swin-like (channels-last) layers."""
    return tensor.permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def channels_last_models(one_thread):
    """Random-init timm Swin (N × h × w × C from its patch embedding to its final ``norm``) and torchvision
    ConvNeXt (N × h × w × C inside each block, around its LayerNorm and MLP), at 64 px, two images each."""
    from neurotomy.loading import load_model

    models = {}
    for spec in ("timm:swin_tiny_patch4_window7_224", "torchvision:convnext_tiny", "timm:convnext_atto"):
        torch.manual_seed(0)
        models[spec] = load_model(spec, in_channels=3, num_classes=10, input_size=64).eval()
    return models, images(2, (3, 64, 64))


CHANNELS_LAST_CASES = [  # spec, layer (None: the default), whether its output is N × h × w × C
    ("timm:swin_tiny_patch4_window7_224", None, True),  # the default: its final norm, 1 × 2 × 2 × 768
    ("timm:swin_tiny_patch4_window7_224", "layers.3.blocks.1", True),  # a block: the layout of its own norm
    ("torchvision:convnext_tiny", None, False),  # the default, "features": channels-first as before
    ("torchvision:convnext_tiny", "features.7.2.block.5", True),  # the block's last Linear, before its Permute
    ("torchvision:convnext_tiny", "features.7.2.block.4", True),  # GELU between the MLP's Linears
    ("timm:convnext_atto", None, False),  # norm_pre: channels-first throughout (its norms are LayerNorm2d)
]


# HiResCAM is left out on the Swin block: its output feeds only the final LayerNorm, which is invariant to
# scaling its input, so Σ_k A_k ∂y/∂A_k = 0 at every position and both maps are float32 rounding noise.
@pytest.mark.parametrize("method,spec,layer,channels_last", [
    (method, *case) for method in ("gradcam", "hirescam") for case in CHANNELS_LAST_CASES
    if not (method == "hirescam" and case[1] == "layers.3.blocks.1")])
def test_channels_last_maps_equal_pytorch_grad_cam_with_the_swin_reshape_transform(
        channels_last_models, spec, layer, channels_last, method):
    models, x = channels_last_models
    model, t = models[spec], torch.tensor([3, 6])
    if layer is None:
        layer = cam_layer(model, x)
        assert layer == default_cam_layer(model, x) == {"timm:swin_tiny_patch4_window7_224": "norm",
                                                         "torchvision:convnext_tiny": "features",
                                                         "timm:convnext_atto": "norm_pre"}[spec]
        ours = attribute(model, x, t, method=method)
    else:
        ours = attribute(model, x, t, method=method, layer=layer)
    with REFERENCE[method](model=model, target_layers=[model.get_submodule(layer)],
                           reshape_transform=nhwc_to_nchw if channels_last else None) as cam:
        theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t]))
    assert ours.shape == theirs.shape == (2, 64, 64)
    assert normalize(ours).std() > 0.1  # not constant
    torch.testing.assert_close(normalize(ours), normalize(theirs), atol=2e-4, rtol=0)
    if spec.startswith("timm:swin"):  # the other reading of the same map (the bug) differs visibly
        with REFERENCE[method](model=model, target_layers=[model.get_submodule(layer)]) as cam:
            scrambled = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t]))
        assert float((normalize(ours) - normalize(scrambled)).abs().max()) > 0.2


class TinyChannelsLast(nn.Module):
    """A conv stem, then everything channels-last (N × h × w × C) as in Swin: Linear → LayerNorm → GELU,
    global average pooling over h and w, a linear head. A non-square image, so h ≠ w ≠ C."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.proj, self.norm, self.act, self.head = nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 10)

    def forward(self, x):
        x = self.act(self.norm(self.proj(self.stem(x).permute(0, 2, 3, 1))))
        return self.head(x.mean((1, 2)))


def test_every_cam_on_a_channels_last_map_equals_the_formulas_by_hand():
    torch.manual_seed(0)
    model, x, t = TinyChannelsLast().eval(), images(3, (3, 12, 20)), torch.tensor([0, 4, 9])
    assert cam_layer(model, x) == "act"  # the last spatial map, 6 × 10 positions of 8 channels
    tokens, grads, logits = token_activations_and_gradients(model, "act", x, t)  # plain hook: N × 6 × 10 × 8
    assert tokens.shape == (3, 6, 10, 8)
    a, g = tokens.permute(0, 3, 1, 2), grads.permute(0, 3, 1, 2)
    y = logits.gather(1, t[:, None])[:, 0]
    drops = []
    for k in range(8):
        def zero_k(mod, inp, out, k=k):
            out = out.clone()
            out[..., k] = 0  # channel k: the last axis
            return out
        handle = model.act.register_forward_hook(zero_k)
        try:
            with torch.no_grad():
                drops.append((y - model(x).gather(1, t[:, None])[:, 0]) / y)
        finally:
            handle.remove()
    by_hand = {"gradcam": (g.mean((2, 3), keepdim=True) * a).sum(1), "hirescam": (g * a).sum(1),
               "layercam": (g.clamp(min=0) * a).sum(1),
               "ablationcam": (torch.stack(drops, 1)[:, :, None, None] * a).sum(1)}
    for method, cam in by_hand.items():
        want = up(cam.clamp(min=0), (12, 20))
        assert float(want.amax()) > 0
        torch.testing.assert_close(attribute(model, x, t, method=method), want,
                                   atol=1e-5 * float(want.abs().max()), rtol=1e-4)
    for method in ("gradcam_pp", "scorecam"):
        with REFERENCE[method](model=model, target_layers=[model.act], reshape_transform=nhwc_to_nchw) as cam:
            theirs = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t]))
        torch.testing.assert_close(normalize(attribute(model, x, t, method=method)), normalize(theirs),
                                   atol=2e-4, rtol=0)
    for method in METHODS.names(family="cam"):  # Eigen-CAM too: N × 12 × 20, finite
        maps = attribute(model, x, t, method=method)
        assert maps.shape == (3, 12, 20) and bool(torch.isfinite(maps).all())


def test_the_layout_is_read_from_the_module_not_the_sizes():
    from timm.layers import LayerNorm, LayerNorm2d

    x = torch.randn(1, 8, 4, 8)  # h × w × C or C × h × w: the sizes cannot tell (w = C = 8)
    assert computes_over_last_axis(nn.LayerNorm(8), (x,), nn.LayerNorm(8)(x)) is True
    assert computes_over_last_axis(LayerNorm(8), (x,), LayerNorm(8)(x)) is True  # timm's, own forward
    norm2d = LayerNorm2d(8)  # an nn.LayerNorm that normalises axis 1 of N × C × h × w
    with torch.no_grad():
        norm2d.bias.normal_()
    assert computes_over_last_axis(norm2d, (x,), norm2d(x)) is False
    assert computes_over_last_axis(nn.Linear(8, 8), (x,), nn.Linear(8, 8)(x)) is True
    assert computes_over_last_axis(nn.Conv2d(8, 8, 1), (x,), nn.Conv2d(8, 8, 1)(x)) is False
    assert computes_over_last_axis(nn.GELU(), (x,), nn.GELU()(x)) is None  # layout-preserving: inherited
