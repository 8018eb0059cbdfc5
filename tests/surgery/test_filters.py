import copy

import pytest
import torch
from torch import nn

from neurotomy.checkpoint import ModelMeta, save_checkpoint
from neurotomy.loading import load_checkpoint
from neurotomy.errors import PruningError
from neurotomy.models import build_model
from neurotomy.models.summary import count_macs_params
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import apply_cuts, mask_filters, prune_filters
from neurotomy.surgery.planner import Cut, plan_cuts


def randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


CASES = [("resnet20", (1, 28, 28)), ("mobilenetv2", (1, 28, 28)), ("vgg11_bn", (1, 28, 28)),
         ("torchvision:resnet18", (3, 32, 32)), ("torchvision:densenet121", (3, 64, 64))]


@pytest.mark.parametrize("arch,shape", CASES)
def test_zeroed_filters_removed_exactly(arch, shape):
    torch.manual_seed(0)
    model = randomize_bn(build_model(arch, shape[0], 10, shape[1]))
    scores = get_criterion("random")(model, seed=1)
    cuts, _, _ = plan_cuts(model, scores, ratio=0.3, input_shape=shape)
    assert cuts
    mask_filters(model, cuts, shape)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        masked_out = model(x)
        pruned = apply_cuts(model, cuts, shape).eval()
        pruned_out = pruned(x)
    assert count_macs_params(pruned, shape)[0] < count_macs_params(model, shape)[0]
    torch.testing.assert_close(pruned_out, masked_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,shape", CASES[:3])
def test_ratio_zero_is_identity(arch, shape):
    model = randomize_bn(build_model(arch, shape[0], 10, shape[1]))
    result = prune_filters(model, get_criterion("l1")(model), ratio=0.0, input_shape=shape)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(result.model.eval()(x), model(x))
    assert result.macs_after == result.macs_before and result.cuts == []


@pytest.mark.parametrize("scope", ["uniform", "global"])
@pytest.mark.parametrize("target", [0.5, 0.7, 0.85])
def test_macs_target_within_one_point(scope, target):
    model = build_model("resnet20", 1, 10, 28).eval()
    result = prune_filters(model, get_criterion("l2")(model), target_macs=target, scope=scope,
                           input_shape=(1, 28, 28))
    assert abs(result.macs_reduction - target) <= 0.01
    measured = count_macs_params(result.model, (1, 28, 28))
    assert measured == (result.macs_after, result.params_after)


def test_params_target_min_channels_round_to_inner_only():
    model = build_model("resnet20", 1, 10, 28).eval()
    scores = get_criterion("fpgm")(model)
    result = prune_filters(model, scores, target_params=0.4, input_shape=(1, 28, 28))
    assert abs(result.params_reduction - 0.4) <= 0.01
    result = prune_filters(model, scores, ratio=0.9, min_channels=4, round_to=4, input_shape=(1, 28, 28))
    convs = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels >= 4 and c.out_channels % 4 == 0 for c in convs)
    result = prune_filters(model, scores, ratio=0.5, inner_only=True, input_shape=(1, 28, 28))
    pruned = dict(result.model.named_modules())
    assert pruned["layer1.0.conv1"].out_channels == 8      # inner conv: halved
    assert pruned["layer1.0.conv2"].out_channels == 16     # tied by the residual add: kept
    assert pruned["fc"].out_features == 10                  # classifier ignored by default


def test_global_scope_prunes_unevenly():
    model = build_model("resnet20", 1, 10, 28).eval()
    scores = get_criterion("l1")(model)
    with torch.no_grad():  # make one layer's filters clearly the weakest
        model.layer2[1].conv1.weight[:16] *= 1e-3
    scores = get_criterion("l1")(model)
    result = prune_filters(model, scores, ratio=0.2, scope="global", input_shape=(1, 28, 28))
    assert dict(result.model.named_modules())["layer2.1.conv1"].out_channels <= 16


def test_impossible_requests_leave_model_untouched():
    model = build_model("resnet20", 1, 10, 28).eval()
    before = copy.deepcopy(model.state_dict())
    scores = get_criterion("l1")(model)
    for kwargs, needle in [({"ratio": 1.0}, "impossible"), ({"ratio": -0.1}, "impossible"),
                           ({"target_macs": 0.95, "min_channels": 12}, "cannot be reached"),
                           ({"ratio": 0.5, "ignored_layers": ["nope"]}, "not in the model"),
                           ({"ratio": 0.5, "target_macs": 0.5}, "exactly one"),
                           ({"ratio": 0.5, "scope": "local"}, "unknown scope")]:
        with pytest.raises(PruningError, match=needle):
            prune_filters(model, scores, input_shape=(1, 28, 28), **kwargs)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x)
        x = torch.from_numpy(x.detach().numpy()).requires_grad_()  # breaks the autograd trace
        return self.fc(x.mean((2, 3)))


def test_untraceable_model_fails_clearly():
    model = Untraceable().eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(PruningError):
        prune_filters(model, get_criterion("l1")(model, None), ratio=0.5, input_shape=(1, 8, 8))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_recipe_rebuilds_pruned_architecture(tmp_path):
    args = {"in_channels": 1, "num_classes": 10, "input_size": 28}
    model = randomize_bn(build_model("resnet20", **args))
    model.neurotomy_meta = ModelMeta("resnet20", args)
    step1 = prune_filters(model, get_criterion("l1")(model), target_macs=0.3).model
    step2 = prune_filters(step1, get_criterion("fpgm")(step1), ratio=0.2, scope="global").model
    assert len(step2.neurotomy_meta.recipe) > len(step1.neurotomy_meta.recipe) > 0
    assert model.neurotomy_meta.recipe == []  # the input's metadata is not touched
    path = save_checkpoint(step2, step2.neurotomy_meta, tmp_path / "p")
    loaded = load_checkpoint(path)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), step2.eval()(x), atol=0, rtol=0)


def conv_classifier_net(classes=4):
    """A SqueezeNet-style net: its logits come from a 1×1 conv followed by a global pool (no Linear)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


@pytest.mark.parametrize("ignored", [None, ["0"]])
def test_conv_classifier_keeps_every_class(ignored):
    model = conv_classifier_net()
    shape = (3, 8, 8)
    result = prune_filters(model, get_criterion("l1")(model), ratio=0.5, input_shape=shape, ignored_layers=ignored)
    assert "4" not in {c.layer for c in result.cuts}  # the conv writing the logits is never a root
    assert result.model.eval()(torch.zeros(1, *shape)).shape == (1, 4)
    assert result.cuts  # the other layers were still cut


def test_linear_classifier_kept_even_when_other_layers_ignored():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 5)).eval()
    result = prune_filters(model, get_criterion("l1")(model), ratio=0.5, input_shape=(3, 8, 8), ignored_layers=[])
    assert result.model(torch.zeros(1, 3, 8, 8)).shape == (1, 5)


def test_cut_that_drops_classes_is_refused():
    model = conv_classifier_net()
    with pytest.raises(PruningError, match="output from \\[4\\] to \\[3\\]"):
        apply_cuts(model, [Cut("4", [0])], (3, 8, 8))
