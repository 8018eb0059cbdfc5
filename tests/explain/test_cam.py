"""Our torch CAM family against pytorch-grad-cam, the reference, and against the papers' formulas
computed by hand (plain hooks and autograd) on the raw maps.

pytorch-grad-cam returns min–max normalised maps resized by OpenCV; our raw maps, min–max normalised,
must be the same maps (bilinear resizing commutes with the affine normalisation). Normalised maps
cannot see a per-image scale, so Grad-CAM, HiResCAM, LayerCAM and Ablation-CAM are also checked raw.

``check_cam(method, case)`` and ``check_eigencam(case)`` are plain functions: the tests below run them
on the shipped ResNet-20 and real images, the mutation check (:mod:`tests.mutants`) on the small
LeNet-5 case against broken versions of each method.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import (
    AblationCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from neurotomy.explain import attribute, normalize
from tests.crosscheck import expected_value
from tests.explain.cases import lenet_case, resnet20_case

REFERENCE = {"gradcam": GradCAM, "gradcam_pp": GradCAMPlusPlus, "hirescam": HiResCAM, "layercam": LayerCAM,
             "scorecam": ScoreCAM, "ablationcam": AblationCAM}


@expected_value
def reference_maps(method, case):
    with REFERENCE[method](model=case.model, target_layers=[case.cam_module]) as cam:
        if hasattr(cam, "batch_size"):
            cam.batch_size = 64
        targets = [ClassifierOutputTarget(int(t)) for t in case.targets]
        return torch.from_numpy(cam(input_tensor=case.images, targets=targets))


@expected_value
def layer_activations_and_gradients(case):
    """The CAM layer's output A and ∂y_c/∂A for each image's target, by a plain hook."""
    seen = []
    handle = case.cam_module.register_forward_hook(lambda module, inputs, output: seen.append(output))
    try:
        logits = case.model(case.images)
    finally:
        handle.remove()
    grad, = torch.autograd.grad(logits.gather(1, case.targets[:, None]).sum(), seen[0])
    return seen[0].detach(), grad, logits.detach()


@expected_value
def ablated_logits(case):
    """y_c with channel k of the CAM layer zeroed, for every k (N × channels), one forward per k."""
    activations, _, _ = layer_activations_and_gradients(case)
    columns = []
    for k in range(activations.shape[1]):
        def zero_k(module, inputs, output, k=k):
            output = output.clone()
            output[:, k] = 0
            return output
        handle = case.cam_module.register_forward_hook(zero_k)
        try:
            with torch.no_grad():
                columns.append(case.model(case.images).gather(1, case.targets[:, None])[:, 0])
        finally:
            handle.remove()
    return torch.stack(columns, 1)


def _up(maps, case):
    return F.interpolate(maps[:, None], size=case.images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def raw_by_hand(method, case):
    """The paper's raw map (before upsampling: ReLU of a weighted sum over channels), upsampled."""
    a, g, logits = layer_activations_and_gradients(case)
    if method == "gradcam":  # Selvaraju et al.: channel weight = spatial mean of the gradient
        cam = (g.mean((2, 3), keepdim=True) * a).sum(1)
    elif method == "hirescam":  # Draelos & Carin: element-wise gradient × activation
        cam = (g * a).sum(1)
    elif method == "layercam":  # Jiang et al.: positive gradients only
        cam = (g.clamp(min=0) * a).sum(1)
    elif method == "ablationcam":  # Desai & Ramaswamy: relative drop of y_c when channel k is zeroed
        y = logits.gather(1, case.targets[:, None])
        cam = (((y - ablated_logits(case)) / y)[:, :, None, None] * a).sum(1)
    else:
        return None
    return _up(cam.clamp(min=0), case)


def check_cam(method, case):
    ours = attribute(case.model, case.images, case.targets, method=method, layer=case.cam_layer)
    normalised = normalize(ours)
    theirs = normalize(reference_maps(method, case))
    assert normalised.shape == theirs.shape == case.images[:, 0].shape
    assert normalised.std() > 0.1  # not a degenerate all-equal map
    torch.testing.assert_close(normalised, theirs, atol=2e-4, rtol=0)
    raw = raw_by_hand(method, case)
    if raw is not None:
        torch.testing.assert_close(ours, raw, atol=1e-5 * float(raw.abs().max()), rtol=1e-4)


def check_eigencam(case):
    """Projection of the centred activations on their first principal component (the reference
    library's get_2d_projection), oriented to agree with the summed activation, upsampled."""
    activations, _, _ = layer_activations_and_gradients(case)
    projection = torch.from_numpy(get_2d_projection(activations.numpy())).to(activations)
    summed = activations.sum(1)
    sign = torch.sign((projection * summed).sum((1, 2)))
    oriented = sign[:, None, None] * projection
    assert (sign != 0).all() and oriented.std() > 0
    tolerance = {"atol": 1e-4 * float(oriented.abs().max()), "rtol": 1e-4}
    ours = attribute(case.model, case.images, case.targets, method="eigencam", layer=case.cam_layer, relu=False)
    torch.testing.assert_close(ours, _up(oriented, case), **tolerance)
    # the default rectifies the layer map, then upsamples it
    torch.testing.assert_close(attribute(case.model, case.images, case.targets, method="eigencam", layer=case.cam_layer),
                               _up(oriented.clamp(min=0), case), **tolerance)


@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_cam_equals_pytorch_grad_cam_and_the_formula(method, resnet20, fmnist_batch):
    n = 4 if method in ("scorecam", "ablationcam") else None  # one forward per channel per image
    check_cam(method, resnet20_case(resnet20, fmnist_batch, n))


def test_eigencam_equals_reference_projection(resnet20, fmnist_batch):
    check_eigencam(resnet20_case(resnet20, fmnist_batch))


@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_cam_on_a_small_network(method):
    check_cam(method, lenet_case())


def test_default_layer_is_the_last_feature_map(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    torch.testing.assert_close(attribute(resnet20, images, targets, method="gradcam"),
                               attribute(resnet20, images, targets, method="gradcam", layer="layer3"))


def test_raw_maps_keep_sign_when_asked(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    signed = attribute(resnet20, images, targets, method="gradcam", layer="layer2", relu=False)
    rectified = attribute(resnet20, images, targets, method="gradcam", layer="layer2")
    assert (signed < 0).any() and (rectified >= 0).all()
    # ReLU of the layer map before upsampling: wherever the signed map is positive everywhere nearby,
    # both agree; globally the rectified map dominates the signed one
    assert (rectified >= signed - 1e-6).all()
    assert np.isfinite(signed.numpy()).all()


def test_batched_equals_one_by_one(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    batched = attribute(resnet20, images, targets, method="gradcam_pp")
    single = torch.cat([attribute(resnet20, images[i:i + 1], targets[i:i + 1], method="gradcam_pp")
                        for i in range(len(images))])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
