import copy

import pytest
import torch
from torch import nn

from neurotomy.checkpoint import ModelMeta, save_checkpoint
from neurotomy.data import load_dataset
from neurotomy.loading import load_checkpoint
from neurotomy.errors import CheckpointError, PruningError
from neurotomy.recover import recalibrate_batchnorm
from neurotomy.models import build_model
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters
from neurotomy.models.anatomy import removable_blocks
from neurotomy.surgery.layers import LeastSquares, refit_successor, remove_blocks
from neurotomy.surgery.recipe import replay_recipe
from tests.crosscheck import one_thread


@pytest.mark.parametrize("arch,shape", [("resnet20", (1, 28, 28)), ("resnet56", (1, 28, 28)),
                                        ("torchvision:resnet18", (3, 32, 32))])
def test_block_removal_runs_with_right_shapes(arch, shape):
    model = build_model(arch, shape[0], 10, shape[1]).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(remove_blocks(model, [])(x), model(x))
        blocks = removable_blocks(model)
        downsampling = [b for b in removable_blocks(model, keep_downsampling=False) if b not in blocks]
        assert downsampling  # these models do have down-sampling blocks
        slim = remove_blocks(model, blocks[-2:] + downsampling[:1])
        assert slim(x).shape == (2, 10)
        assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())


def _output_with_blocks_bypassed(model, x, names):
    """The model's output with each block ``name`` replaced, by a plain forward hook, by what layer
    removal promises: the block's shortcut branch applied to its input (``shortcut`` in our ResNets,
    ``downsample`` in torchvision's), or its input itself when the shortcut is the identity."""
    handles = []
    for name in names:
        block = model.get_submodule(name)
        branch = getattr(block, "shortcut", None) or getattr(block, "downsample", None) or torch.nn.Identity()
        handles.append(block.register_forward_hook(lambda module, inputs, output, branch=branch: branch(inputs[0])))
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("arch,shape", [("resnet20", (1, 28, 28)), ("torchvision:resnet18", (3, 32, 32))])
def test_removed_block_equals_identity_or_shortcut_only(arch, shape):
    torch.manual_seed(0)
    model = build_model(arch, shape[0], 10, shape[1]).eval()
    x = torch.randn(2, *shape)
    identity = removable_blocks(model)[-1]
    downsampling = next(b for b in removable_blocks(model, keep_downsampling=False) if b not in removable_blocks(model))
    with torch.no_grad(), one_thread():  # two images: see tests/crosscheck.py
        full = model(x)
        for names in ([identity], [downsampling], [identity, downsampling]):
            expected = _output_with_blocks_bypassed(model, x, names)
            assert not torch.allclose(expected, full, atol=1e-4)  # the blocks mattered
            torch.testing.assert_close(remove_blocks(model, names)(x), expected)


def test_unknown_block():
    with pytest.raises(PruningError, match="not a residual block"):
        remove_blocks(build_model("resnet20", 1, 10, 28), ["layer9.9"])


def test_layer_and_filter_pruning_round_trip(tmp_path):
    args = {"in_channels": 1, "num_classes": 10, "input_size": 28}
    model = build_model("resnet20", **args).eval()
    model.neurotomy_meta = ModelMeta("resnet20", args)
    slim = remove_blocks(model, ["layer3.2", "layer1.1"])
    slim = prune_filters(slim, get_criterion("l1")(slim), ratio=0.3).model
    slim = remove_blocks(slim, ["layer2.2"])
    path = save_checkpoint(slim, slim.neurotomy_meta, tmp_path / "slim")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(path)(x), slim.eval()(x))


# ---- plain networks (VGG): conv blocks without a shortcut; the successor is refit by least squares ----

@pytest.fixture(scope="module")
def vgg_and_data():
    """A VGG-16 with BatchNorm statistics of real images (so activations are those of data, not of
    initialisation), the bundled Fashion-MNIST subset's train split to fit on, 300 held-out images."""
    torch.manual_seed(0)
    train, test = load_dataset("fashion-mnist", split="train"), load_dataset("fashion-mnist", split="test")
    model = build_model("vgg16_bn", 1, 10, 28)
    with one_thread():
        recalibrate_batchnorm(model, train, 256, quiet=True)
    return model.eval(), train, torch.stack([test[i][0] for i in range(300)])


def _layer_output(model, layer, x):
    seen = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, out: seen.update(out=out))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    return seen["out"], logits


def _relative_error(a, b):
    return float((a - b).norm() / b.norm())


def test_plain_blocks_removed_and_reloaded(vgg_and_data, tmp_path):
    model, train, held = vgg_and_data
    # a channel-changing block (16→32), two adjacent blocks sharing one successor, the last block
    # (its successor is the classifier)
    names = ["features.9", "features.19", "features.22", "features.42"]
    with one_thread():
        slim = remove_blocks(model, names, train, max_images=128)
        assert slim.features[10].in_channels == 16 and slim.features[24].in_channels == 64
        assert all(isinstance(slim.features[i], nn.Identity) for i in (7, 8, 9, 17, 18, 19, 20, 21, 22, 40, 41, 42))
        assert [s.get("successor") for s in slim.neurotomy_meta.recipe] == ["features.10", "features.20",
                                                                            "features.24", "classifier"]
        assert {s["adapted"] for s in slim.neurotomy_meta.recipe} == {"least_squares"}
        path = save_checkpoint(slim, slim.neurotomy_meta, tmp_path / "slim")
        with torch.no_grad():
            out = slim(held[:8])
            assert out.shape == (8, 10)
            assert torch.equal(load_checkpoint(path)(held[:8]), out)
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("block,successor", [("features.22", "features.24"), ("features.42", "classifier")])
def test_least_squares_beats_identity_on_held_data(vgg_and_data, block, successor):
    model, train, held = vgg_and_data
    with one_thread():
        target, logits = _layer_output(model, successor, held)
        fitted = _layer_output(remove_blocks(model, [block], train, max_images=256), successor, held)
        naive = _layer_output(remove_blocks(model, [block]), successor, held)
    # the fit is on training images; the errors are measured on held-out ones
    assert _relative_error(fitted[0], target) < 0.75 * _relative_error(naive[0], target)
    assert _relative_error(fitted[1], logits) < _relative_error(naive[1], logits)


def test_identity_removal_without_data(vgg_and_data):
    """Without data a channel-keeping block becomes the identity, successor untouched: the same
    output as a forward hook that passes the block's conv input through to its activation's output."""
    model, _, held = vgg_and_data
    slim = remove_blocks(model, ["features.22"])
    assert torch.equal(slim.features[24].weight, model.features[24].weight)
    assert slim.neurotomy_meta.recipe[-1]["adapted"] == "none"
    seen = {}
    hooks = [model.features[20].register_forward_hook(lambda m, i, o: seen.update(x=i[0])),
             model.features[22].register_forward_hook(lambda m, i, o: seen["x"])]
    try:
        with torch.no_grad(), one_thread():
            expected = model(held[:8])
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad(), one_thread():
        torch.testing.assert_close(slim(held[:8]), expected)
    with pytest.raises(PruningError, match="pass data"):
        remove_blocks(model, ["features.9"])  # 16 → 32 channels: the successor must be refit


def test_recipe_naming_another_successor_is_corrupt():
    model = build_model("vgg16_bn", 1, 10, 28)
    with pytest.raises(CheckpointError, match="successor"):
        replay_recipe(model, [{"op": "remove_block", "layer": "features.22", "successor": "features.27"}], (1, 28, 28))


def test_least_squares_solver_matches_lstsq():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64)
    x[:, 5] = 0.0  # a feature that never fires (a conv tap that only sees padding)
    y = x @ torch.randn(6, 3, generator=g, dtype=torch.float64) + torch.randn(300, 3, generator=g, dtype=torch.float64)
    ones = torch.ones(300, 1, dtype=torch.float64)
    for ridge in (0.0, 0.1):
        fit = LeastSquares(6, 3)
        for chunk in (slice(0, 100), slice(100, 250), slice(250, 300)):
            fit.add(x[chunk], y[chunk])
        weight, bias = fit.solve(ridge)
        # reference: lstsq on the data, augmented by √λ·I rows for every weight but the intercept's
        lam = ridge * float((x * x).sum(0).mean())
        design = torch.cat([torch.cat([x, ones], 1),
                            torch.cat([lam ** 0.5 * torch.eye(6, dtype=torch.float64),
                                       torch.zeros(6, 1, dtype=torch.float64)], 1)])
        targets = torch.cat([y, torch.zeros(6, 3, dtype=torch.float64)])
        reference = torch.linalg.lstsq(design, targets, driver="gelsd").solution
        torch.testing.assert_close(weight, reference[:6], atol=1e-8, rtol=1e-6)
        torch.testing.assert_close(bias, reference[6], atol=1e-8, rtol=1e-6)


def _im2col(x, k=3, pad=1):
    """Naive 3×3 patches, channel-major then kernel row, kernel column (N·H·W × C·k·k)."""
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    n, c, h, w = x.shape
    cols = [padded[:, ci, di:di + h, dj:dj + w] for ci in range(c) for di in range(k) for dj in range(k)]
    return torch.stack(cols, -1).reshape(n * h * w, c * k * k)


@pytest.mark.parametrize("bias", [True, False])
def test_refit_successor_matches_brute_force(bias):
    """Refit of a conv whose input lost a block, every position used, against im2col + lstsq; the
    intercept lands in the conv's bias, or (no bias) in the running mean of the BatchNorm after it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 3, 3, padding=1, bias=bias), nn.BatchNorm2d(3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)).eval()
    for bn in (net[1], net[4], net[7]):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    data = load_dataset("digits")
    x = torch.stack([data[i][0] for i in range(40)])
    slim = copy.deepcopy(net)
    for i in (3, 4, 5):
        slim[i] = nn.Identity()
    with one_thread():
        refit_successor(net, slim, "6", data, max_images=40, positions=10 ** 6, ridge=1e-3)
    with torch.no_grad():
        rows = _im2col(net[:3](x)).double()
        target = net[:7](x).permute(0, 2, 3, 1).reshape(-1, 3).double()
    lam = 1e-3 * float((rows * rows).sum(0).mean())
    design = torch.cat([torch.cat([rows, torch.ones(len(rows), 1, dtype=torch.float64)], 1),
                        torch.cat([lam ** 0.5 * torch.eye(36, dtype=torch.float64),
                                   torch.zeros(36, 1, dtype=torch.float64)], 1)])
    solution = torch.linalg.lstsq(design, torch.cat([target, torch.zeros(36, 3, dtype=torch.float64)])).solution
    torch.testing.assert_close(slim[6].weight.double(), solution[:36].T.reshape(3, 4, 3, 3), atol=1e-5, rtol=1e-4)
    if bias:
        torch.testing.assert_close(slim[6].bias.double(), solution[36], atol=1e-5, rtol=1e-4)
    else:
        torch.testing.assert_close(slim[7].running_mean.double(), net[7].running_mean.double() - solution[36],
                                   atol=1e-5, rtol=1e-4)


def test_plain_removal_and_filter_pruning_round_trip(vgg_and_data, tmp_path):
    model, train, held = vgg_and_data
    with one_thread():
        slim = remove_blocks(model, ["features.9", "features.22"], train, max_images=64)
        slim = prune_filters(slim, get_criterion("l1")(slim), ratio=0.3).model
        slim = remove_blocks(slim, ["features.42"], train, max_images=64)  # refit on a filter-pruned model
        path = save_checkpoint(slim, slim.neurotomy_meta, tmp_path / "slim")
        with torch.no_grad():
            assert torch.equal(load_checkpoint(path)(held[:4]), slim.eval()(held[:4]))
