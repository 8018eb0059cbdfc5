import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.grad_mask import GradMaskConfig
from neurotomy.gradient_quality import (coherence_of, foreground_pixels, gradient_coherence,
                                        per_sample_gradients, saliency_focus)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))


def test_per_sample_gradients_match_torch_func():
    model = small_cnn()
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])
    reference = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    reference = torch.cat([reference[k].reshape(6, -1) for k, _ in model.named_parameters()], 1).double()
    ours = per_sample_gradients(model, x, y)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-7)
    expected = float(reference.mean(0).pow(2).sum() / reference.pow(2).sum(1).mean())
    assert gradient_coherence(model, x, y) == pytest.approx(expected, rel=1e-6)


def test_coherence_bounds():
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    opposite = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    orthogonal = torch.eye(4)
    assert coherence_of(same) == pytest.approx(1.0)
    assert coherence_of(opposite) == pytest.approx(0.0)
    assert coherence_of(orthogonal) == pytest.approx(1 / 4)


def test_masked_coherence_uses_the_mask():
    model = small_cnn().train()
    x, y = torch.randn(5, 1, 4, 4), torch.tensor([0, 1, 2, 3, 0])
    plain = per_sample_gradients(model, x, y)
    masked = per_sample_gradients(model, x, y, GradMaskConfig(rule="topq", q=0.25))
    conv = model[0].weight.numel() + model[0].bias.numel()
    assert not torch.allclose(plain[:, :conv], masked[:, :conv])  # the conv below the mask changes
    torch.testing.assert_close(plain[:, conv:], masked[:, conv:])  # the layer above does not
    assert model.training  # restored
    only_conv = per_sample_gradients(model, x, y, parameters=model[0].parameters())
    torch.testing.assert_close(only_conv, plain[:, :conv])


def test_saliency_focus_by_hand():
    # Linear model whose input gradient for class c is its weight row: focus is computable by hand.
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -3.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0]]))
    norm = Normalization((0.5,), (0.5,))
    pixels = torch.tensor([[1.0, 0.0, 0.0, 0.2], [0.0, 0.0, 0.7, 0.0]]).view(2, 1, 2, 2)
    data = TensorImageDataset(norm.apply(pixels), torch.tensor([0, 1]), ["a", "b"], norm)
    assert foreground_pixels(data.images, norm).view(2, 4).tolist() == [[True, False, False, True],
                                                                         [False, False, True, False]]
    focus = saliency_focus(model, data)
    # image 0, class 0: |w| = 1,3,0,0 → 1/4 on its object; image 1, class 1: 2,2 on 2 of 4 → 1/2
    assert focus.focus == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert focus.foreground_share == pytest.approx((2 / 4 + 1 / 4) / 2)
