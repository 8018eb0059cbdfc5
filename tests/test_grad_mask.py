import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.checkpoint import read_meta
from neurotomy.cli import main
from neurotomy.data import load_dataset
from neurotomy.errors import OptionError
from neurotomy.grad_mask import GradientMask, GradMaskConfig, mask_sites
from neurotomy.models import build_model
from neurotomy.probe import Probe
from neurotomy.train import TrainConfig, fit, seed_everything


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 5 * 5, 3))


def hand_keep(grad: np.ndarray, act: np.ndarray, config: GradMaskConfig) -> np.ndarray:
    """The rule written out position by position, independently of keep_mask's vectorised code."""
    keep = np.zeros(grad.shape, dtype=bool)
    for n in range(grad.shape[0]):
        for c in range(grad.shape[1]):
            score = np.abs(act[n, c] * grad[n, c]) if config.rule == "act-grad" else np.abs(grad[n, c])
            values = sorted(score.ravel().tolist(), reverse=True)
            if config.rule == "topq":
                threshold = values[math.ceil(config.q * len(values)) - 1]
            else:
                threshold = config.tau * sum(values) / len(values)
            for i in range(grad.shape[2]):
                for j in range(grad.shape[3]):
                    keep[n, c, i, j] = score[i, j] >= threshold
    return keep


@pytest.mark.parametrize("config", [GradMaskConfig("mean", tau=1.0), GradMaskConfig("mean", tau=0.5),
                                    GradMaskConfig("topq", q=0.3), GradMaskConfig("act-grad", tau=1.0)])
def test_masked_gradients_are_exactly_those_the_rule_selects(config):
    model = tiny_model().train()
    x, y = torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 1])

    # Plain pass: the gradient at the ReLU output and the activation, then the rule by hand.
    a = model[1](model[0](x))
    g = torch.autograd.grad(F.cross_entropy(model[3](model[2](a)), y), a, retain_graph=True)[0]
    keep = torch.from_numpy(hand_keep(g.numpy().astype(np.float64), a.detach().numpy(), config))
    assert 0 < keep.sum() < keep.numel()  # the rule drops some entries and keeps some
    expected_masked = torch.where(keep, g, torch.zeros(()))
    expected_conv_grad = torch.autograd.grad(a, model[0].weight, expected_masked, retain_graph=True)[0]

    seen = {}
    with GradientMask(model, config) as mask, \
            Probe(model, ["1"], on_grad=lambda name, out, grad: seen.update({name: grad.clone()})):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    assert torch.equal(seen["1"], expected_masked)  # the recorder's hook runs after the mask's
    torch.testing.assert_close(model[0].weight.grad, expected_conv_grad, rtol=0, atol=1e-7)
    assert not torch.allclose(model[0].weight.grad, torch.autograd.grad(a, model[0].weight, g)[0])
    nonzero = g != 0
    assert mask.kept_fraction()["1"] == pytest.approx(float((keep & nonzero).sum() / nonzero.sum()))
    assert mask.kept_mass()["1"] == pytest.approx(float(expected_masked.abs().sum() / g.abs().sum()))


def test_only_in_training_and_hooks_removed():
    model = tiny_model().eval()
    x, y = torch.randn(2, 1, 5, 5), torch.tensor([0, 2])
    plain = torch.autograd.grad(F.cross_entropy(model(x), y), model[0].weight)[0]
    with GradientMask(model, GradMaskConfig()) as mask:
        masked_eval = torch.autograd.grad(F.cross_entropy(model(x), y), model[0].weight)[0]
    assert torch.equal(plain, masked_eval) and mask.kept_fraction() == {}
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="boom"):
        with GradientMask(model, GradMaskConfig()):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())


def _train(config: TrainConfig) -> nn.Module:
    seed_everything(0)
    model = build_model("lenet5", 1, 10, 8)
    fit(model, load_dataset("digits"), config)
    return model


def test_mask_off_is_bit_identical_to_plain_training():
    base = dict(epochs=1, lr=0.05, batch_size=32, max_images=320, quiet=True)
    plain = _train(TrainConfig(**base))
    off = _train(TrainConfig(**base, grad_mask=False, grad_mask_rule="topq", grad_mask_tau=3.0))
    keep_all = _train(TrainConfig(**base, grad_mask=True, grad_mask_tau=0.0))  # |g| ≥ 0 keeps all
    masked = _train(TrainConfig(**base, grad_mask=True))
    for name, p in plain.state_dict().items():
        assert torch.equal(p, off.state_dict()[name]), name
        assert torch.equal(p, keep_all.state_dict()[name]), name
    assert not all(torch.equal(p, masked.state_dict()[n]) for n, p in plain.state_dict().items())
    for model in (plain, off, keep_all, masked):
        assert all(not m._forward_hooks for m in model.modules())  # no hook outlives fit


def test_sites_and_bad_options():
    model = build_model("resnet20", 1, 10, 8)
    relus = mask_sites(model, "relu")
    assert "relu" in relus and "layer3.2.relu2" in relus and len(relus) == 1 + 2 * 9
    assert len(mask_sites(model, "conv")) == 1 + 2 * 9 + 2  # two 1×1 projection shortcuts
    for kwargs, needle in [({"rule": "median"}, "unknown gradient-mask rule"), ({"tau": -1.0}, "tau"),
                           ({"q": 0.0}, "q must be"), ({"sites": "bn"}, "unknown gradient-mask sites")]:
        with pytest.raises(OptionError, match=needle):
            GradMaskConfig(**kwargs)


def test_cli_trains_with_grad_mask(tmp_path, capsys):
    out = tmp_path / "masked.safetensors"
    assert main(["train", "lenet5", "--data", "digits", "--epochs", "1", "--batch-size", "32",
                 "--grad-mask", "--grad-mask-rule", "topq", "--grad-mask-q", "0.4", "--seed", "1",
                 "--out", str(out), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    config = read_meta(out).train_config
    assert config["grad_mask"] is True and config["grad_mask_rule"] == "topq" and config["grad_mask_q"] == 0.4
    assert main(["train", "lenet5", "--data", "digits", "--epochs", "1", "--grad-mask", "--grad-mask-tau", "-2",
                 "--out", str(tmp_path / "bad.safetensors"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tau" in err[0] and not (tmp_path / "bad.safetensors").exists()
