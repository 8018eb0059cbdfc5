import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.attacks import adversarial_accuracy, fgsm, pgd
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.errors import OptionError

NORM = Normalization((0.5,), (0.25,))  # pixels [0, 1] → inputs [-2, 2]; ε pixels → 4ε inputs


def linear_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 2.0, -0.5], [0.3, 0.2, -1.0, 1.0]]))
        model[1].bias.copy_(torch.tensor([0.1, -0.2, 0.0]))
    return model


def hand_fgsm(model, pixels: np.ndarray, targets: np.ndarray, eps: float) -> np.ndarray:
    """FGSM worked out in pixel space with NumPy: ∂CE/∂x = Wᵀ(softmax(Wx + b) − onehot)."""
    w = model[1].weight.detach().numpy().astype(np.float64)
    b = model[1].bias.detach().numpy().astype(np.float64)
    x = (pixels.reshape(len(pixels), -1) - 0.5) / 0.25
    logits = x @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(x)), targets] -= 1
    grad = p @ w  # per-input gradient in normalised space; sign is the same in pixel space (std > 0)
    return np.clip(pixels.reshape(len(x), -1) + eps * np.sign(grad), 0, 1).reshape(pixels.shape)


def test_fgsm_matches_hand_computation():
    model = linear_model()
    pixels = np.array([[0.2, 0.5, 0.9, 0.99], [0.0, 0.4, 0.6, 1.0]]).reshape(2, 1, 2, 2)
    targets = np.array([0, 2])
    expected = hand_fgsm(model, pixels, targets, eps=0.05)
    x = NORM.apply(torch.tensor(pixels, dtype=torch.float32))
    adv = fgsm(model, x, torch.tensor(targets), 0.05, NORM)
    np.testing.assert_allclose((adv * 0.25 + 0.5).numpy(), expected, atol=1e-6)
    assert (adv.min() >= -2) and (adv.max() <= 2)  # the 0.99 and 1.0 pixels were clipped at 1


def test_pgd_one_step_is_fgsm_and_stays_in_ball():
    model = linear_model()
    x = NORM.apply(torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(0)))
    y = torch.arange(8) % 3
    one = pgd(model, x, y, 0.1, NORM, steps=1, step_size=0.1, random_start=False)
    torch.testing.assert_close(one, fgsm(model, x, y, 0.1, NORM))
    adv = pgd(model, x, y, 0.1, NORM, steps=7, generator=torch.Generator().manual_seed(1))
    assert float((adv - x).abs().max()) * 0.25 <= 0.1 + 1e-6
    assert adv.min() >= -2 - 1e-6 and adv.max() <= 2 + 1e-6


def test_pgd_reaches_the_linear_optimum():
    # Two classes, linear model: the worst case in an L∞ ball is the corner FGSM jumps to, so PGD
    # with enough small steps must arrive at the same point (pixels kept away from the [0,1] edges).
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.7], [-1.0, 1.0, 2.0, -0.5]]))
    x = NORM.apply(0.3 + 0.4 * torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(2)))
    y = torch.tensor([0, 1, 0, 1, 1])
    adv = pgd(model, x, y, 0.05, NORM, steps=20, step_size=0.01, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(adv, fgsm(model, x, y, 0.05, NORM))
    assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


def test_adversarial_accuracy_and_bad_options():
    model = linear_model()
    pixels = torch.rand(40, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    targets = model(NORM.apply(pixels)).argmax(1)  # the model is right on every clean image
    data = TensorImageDataset(NORM.apply(pixels), targets, ["a", "b", "c"], NORM)
    assert adversarial_accuracy(model, data, "fgsm", 0.0, quiet=True) == 1.0
    strong = adversarial_accuracy(model, data, "pgd", 0.3, steps=10, quiet=True)
    assert strong < adversarial_accuracy(model, data, "fgsm", 0.02, quiet=True) <= 1.0
    with pytest.raises(OptionError, match="pixel units"):
        fgsm(model, data.images, targets, 8.0, NORM)
    with pytest.raises(OptionError, match="unknown attack"):
        adversarial_accuracy(model, data, "cw", 0.1)
