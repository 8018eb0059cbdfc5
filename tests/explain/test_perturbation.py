"""Occlusion and RISE checked against a naive per-window / per-mask loop, Captum's Occlusion, and a
model whose answer depends on one known pixel.

Each ``check_<method>(case)`` is a plain function: the tests below run it on the shipped ResNet-20
and real Fashion-MNIST images, the mutation check (:mod:`tests.mutants`) on the small LeNet-5 case.
"""

import numpy as np
import pytest
import torch
from captum.attr import Occlusion

from neurotomy.errors import NeurotomyError
from neurotomy.explain import METHODS, attribute, method_names
from neurotomy.explain.perturbation import occlusion_maps, rise_maps, rise_masks
from tests.crosscheck import expected_value
from tests.explain.cases import lenet_case, resnet20_case


def _probability(model, x, target):
    with torch.no_grad():
        return model(x).softmax(1)[:, target]


@expected_value
def _naive_occlusion(case, patch, stride):
    """One occluded copy per window, windows cropped at the border, written as a plain loop."""
    images = case.images
    _, _, height, width = images.shape
    out = torch.zeros(len(images), height, width)
    for n, (image, target) in enumerate(zip(images, case.targets.tolist())):
        whole = _probability(case.model, image[None], target)[0]
        total, count = torch.zeros(height, width), torch.zeros(height, width)
        r = 0
        while True:
            c = 0
            while True:
                occluded = image.clone()
                occluded[:, r:r + patch, c:c + patch] = 0.0
                total[r:r + patch, c:c + patch] += whole - _probability(case.model, occluded[None], target)[0]
                count[r:r + patch, c:c + patch] += 1
                if c + patch >= width:
                    break
                c += stride
            if r + patch >= height:
                break
            r += stride
        out[n] = total / count
    return out


@expected_value
def _captum_occlusion(case, patch, stride):
    channels = case.images.shape[1]
    forward = lambda x: case.model(x).softmax(1)  # noqa: E731 (both papers score the probability)
    with torch.no_grad():
        maps = Occlusion(forward).attribute(case.images, sliding_window_shapes=(channels, patch, patch),
                                            strides=(channels, stride, stride), baselines=0.0, target=case.targets)
    return maps[:, 0]  # the same value in every channel: the window spans them all


def check_occlusion(case):
    side = case.images.shape[-1]
    default_patch = -(-side // 7)
    ours = attribute(case.model, case.images, case.targets, method="occlusion")
    reference = _naive_occlusion(case, default_patch, max(1, default_patch // 2))
    assert (reference < 0).any() and (reference > 0).any()  # signed: |·| would be caught
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
    # a window that does not tile the image (cropped at the border), against Captum
    patch, stride = 3, 2
    ours = attribute(case.model, case.images, case.targets, method="occlusion", patch=patch, stride=stride)
    torch.testing.assert_close(ours, _captum_occlusion(case, patch, stride), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours, _naive_occlusion(case, patch, stride), atol=1e-5, rtol=1e-4)


@expected_value
def _naive_rise(case, count, seed):
    """Σ_i p_c(x ⊙ M_i) M_i / (N · p) with the method's masks, one masked image at a time."""
    _, _, height, width = case.images.shape
    masks = rise_masks(height, width, count, seed=seed)
    out = torch.zeros(len(case.images), height, width)
    for n, (image, target) in enumerate(zip(case.images, case.targets.tolist())):
        for mask in masks:
            out[n] += _probability(case.model, (image * mask)[None], target)[0] * mask
    return out / (count * 0.5)


def check_rise(case):
    ours = attribute(case.model, case.images, case.targets, method="rise", masks=300, seed=3)
    torch.testing.assert_close(ours, _naive_rise(case, 300, 3), atol=1e-5, rtol=1e-4)
    # the seed draws the masks: another seed, other maps; the same seed, the same maps
    other = attribute(case.model, case.images, case.targets, method="rise", masks=300, seed=4)
    assert not torch.allclose(ours, other, atol=1e-3)


def test_occlusion_on_resnet20(resnet20, fmnist_batch):
    check_occlusion(resnet20_case(resnet20, fmnist_batch, n=1))


def test_rise_on_resnet20(resnet20, fmnist_batch):
    check_rise(resnet20_case(resnet20, fmnist_batch, n=1))


def test_lenet_case():
    check_occlusion(lenet_case())
    check_rise(lenet_case())


def test_rise_masks_follow_the_paper():
    masks = rise_masks(28, 28, 2000, cells=7, keep=0.5, seed=0)
    assert masks.shape == (2000, 28, 28) and masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.5) < 0.02  # E[M] = p
    assert 0.0 < ((masks > 0) & (masks < 1)).float().mean() < 1.0  # bilinear: soft edges, not binary
    # one cell of the upsampled grid is 4 pixels: neighbours differ by at most a quarter step
    assert (masks[:, :, 1:] - masks[:, :, :-1]).abs().max() <= 0.25 + 1e-6
    # random shifts: the masks are not all aligned on the same 4-pixel grid
    assert len({tuple(m[0, :5].tolist()) for m in masks[:50]}) > 10
    assert torch.equal(masks, rise_masks(28, 28, 2000, seed=0))
    assert not torch.equal(masks, rise_masks(28, 28, 2000, seed=1))


def one_pixel_model(x):
    """Class 0's logit is 3 × the pixel (2, 5) of channel 0, class 1's is 0; numpy out, like onnxruntime."""
    logits = torch.stack([3 * x[:, 0, 2, 5], torch.zeros(len(x))], 1)
    return logits.numpy()


def test_maps_find_the_one_pixel_the_model_reads():
    images = torch.ones(2, 1, 8, 8)
    maps = occlusion_maps(one_pixel_model, images, [0, 0], patch=1, stride=1)
    expected = torch.zeros(2, 8, 8)
    expected[:, 2, 5] = 1 / (1 + np.exp(-3)) - 0.5  # σ(3) before, σ(0) with the pixel at the baseline
    torch.testing.assert_close(maps, expected)
    rise = rise_maps(one_pixel_model, images, [0, 0], masks=4000, cells=4)
    assert divmod(int(rise[0].argmax()), 8) == (2, 5)
    torch.testing.assert_close(rise[0], rise[1])  # the same masks for every image


def test_a_callable_and_the_module_give_the_same_maps(resnet20, fmnist_batch):
    images, targets = fmnist_batch[0][:2], fmnist_batch[1][:2]
    f = lambda x: resnet20(x).detach().numpy()  # noqa: E731
    torch.testing.assert_close(occlusion_maps(f, images, targets), attribute(resnet20, images, targets,
                                                                               method="occlusion"))
    torch.testing.assert_close(rise_maps(f, images, targets, masks=100),
                               attribute(resnet20, images, targets, method="rise", masks=100))


def test_bad_options_are_refused():
    images = torch.ones(1, 1, 8, 8)
    with pytest.raises(NeurotomyError, match="stride"):
        occlusion_maps(one_pixel_model, images, [0], patch=2, stride=3)
    with pytest.raises(NeurotomyError, match="patch"):
        occlusion_maps(one_pixel_model, images, [0], patch=9)
    with pytest.raises(NeurotomyError, match="keep"):
        rise_maps(one_pixel_model, images, [0], keep=0.0)
    with pytest.raises(NeurotomyError, match="baseline"):
        rise_maps(one_pixel_model, images, [0], baseline=float("nan"))
    with pytest.raises(NeurotomyError, match="N×classes"):
        occlusion_maps(lambda x: np.zeros(3), images, [0])
    with pytest.raises(NeurotomyError, match="class 2 does not exist: the model has 2 classes"):
        occlusion_maps(one_pixel_model, images, [2])
    with pytest.raises(NeurotomyError, match="2 targets for a batch of 1"):
        rise_maps(one_pixel_model, images, [0, 1])


def test_registered_as_the_black_box_family():
    assert method_names("black-box") == ["occlusion", "rise"]
    assert METHODS["occlusion"].signed and not METHODS["rise"].signed
    assert METHODS["rise"].options() == ["masks", "cells", "keep", "baseline", "seed", "batch_size", "centered"]


def test_centered_rise_drops_the_masks_own_pattern():
    """RISE's paper map holds the mean probability × the masks' uneven coverage, the same for any model
    compared with the same masks: two models whose outputs ignore the image agree perfectly. Centered,
    such a model's map is zero, and the model that reads one pixel still finds it."""
    from neurotomy.explain.metrics import agreement

    images = torch.rand(3, 1, 8, 8)
    blind_a = lambda x: torch.tensor([[1.0, 0.0]]).expand(len(x), 2)  # noqa: E731
    blind_b = lambda x: torch.tensor([[0.2, 0.0]]).expand(len(x), 2)  # noqa: E731
    paper = [rise_maps(f, images, [0, 0, 0], masks=500, cells=4) for f in (blind_a, blind_b)]
    assert agreement(*paper, targets=[0, 0, 0])["spearman"] == pytest.approx(1.0)
    centered = rise_maps(blind_a, images, [0, 0, 0], masks=500, cells=4, centered=True)
    torch.testing.assert_close(centered, torch.zeros_like(centered), atol=1e-6, rtol=0)
    reads = rise_maps(one_pixel_model, torch.ones(2, 1, 8, 8), [0, 0], masks=4000, cells=4, centered=True)
    assert divmod(int(reads[0].argmax()), 8) == (2, 5)
