"""Our torch CAM family against pytorch-grad-cam, the reference, on a trained ResNet-20 and real images.

pytorch-grad-cam returns min–max normalised maps resized by OpenCV; our raw maps, min–max normalised,
must be the same maps (bilinear resizing commutes with the affine normalisation)."""

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (AblationCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM,
                              ScoreCAM)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from neurotomy.explain import attribute, normalize
from neurotomy.explain.cam import observe_layer

REFERENCE = {"gradcam": GradCAM, "gradcam_pp": GradCAMPlusPlus, "hirescam": HiResCAM, "layercam": LayerCAM,
             "scorecam": ScoreCAM, "ablationcam": AblationCAM}


def reference_maps(cls, model, layer, images, targets):
    with cls(model=model, target_layers=[layer]) as cam:
        if hasattr(cam, "batch_size"):
            cam.batch_size = 64
        return torch.from_numpy(cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]))


@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_cam_equals_pytorch_grad_cam(method, resnet20, fmnist_batch):
    images, targets = fmnist_batch
    n = 4 if method in ("scorecam", "ablationcam") else len(images)  # one forward per channel per image
    images, targets = images[:n], targets[:n]
    ours = normalize(attribute(resnet20, images, targets, method=method, layer="layer3"))
    theirs = normalize(reference_maps(REFERENCE[method], resnet20, resnet20.layer3, images, targets))
    assert ours.shape == theirs.shape == (n, 28, 28)
    assert ours.std() > 0.1  # not a degenerate all-equal map
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=0)


def test_eigencam_projection_equals_reference_up_to_sign(resnet20, fmnist_batch):
    images, targets = fmnist_batch
    activations, _, _ = observe_layer(resnet20, images, targets, "layer3", gradients=False)
    theirs = torch.from_numpy(get_2d_projection(activations.numpy()))
    ours = attribute(resnet20, images, targets, method="eigencam", layer="layer3", relu=False)
    # compare at the layer's resolution: downsampling back is not exact, so recompute without upsampling
    from neurotomy.explain.cam import EigenCAM
    raw = EigenCAM(layer="layer3", relu=False).layer_map(resnet20, images, targets, "layer3", activations, None, None)
    for ours_i, theirs_i in zip(raw, theirs):
        sign = 1.0 if (ours_i * theirs_i).sum() >= 0 else -1.0
        torch.testing.assert_close(ours_i, sign * theirs_i, atol=1e-4, rtol=1e-4)
    assert ours.shape == (8, 28, 28)
    # our sign convention: the map agrees with the summed activation
    summed = activations.sum(1).flatten(1)
    assert ((raw.flatten(1) * (summed - summed.mean(1, keepdim=True))).sum(1) >= 0).all()


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
