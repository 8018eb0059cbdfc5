"""Least-squares reconstruction after a cut (neurotomy.reconstruct): the ridge solver against
torch.linalg.lstsq, per-layer error against the original, residual-coupled consumers, seeds."""

import copy

import pytest
import torch
from torch import nn

from neurotomy.data import load_dataset
from neurotomy.errors import ModelError
from neurotomy.jobs.prune import kept_output_channels
from neurotomy.models import build_model
from neurotomy.reconstruct import NormalEquations, layer_errors, reconstruct
from neurotomy.recover import recalibrate_batchnorm
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters
from neurotomy.train import TrainConfig, evaluate, fit
from tests import crosscheck

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is fastest on a busy machine


def lstsq_reference(x, y, ridge, prior, intercept):
    """The same ridge problem, (1/n)‖xW + b − y‖² + λ‖W − prior‖², written as one stacked
    least-squares system and solved by torch.linalg.lstsq (no normal equations)."""
    n, d = x.shape
    centred = x - x.mean(0) if intercept else x
    lam = ridge * float((centred.T @ centred / n).diagonal().mean())
    design = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1) if intercept else x
    penalty = torch.zeros(d, design.shape[1], dtype=x.dtype)
    penalty[:, :d] = torch.eye(d, dtype=x.dtype) * (n * lam) ** 0.5
    a = torch.cat([design, penalty])
    b = torch.cat([y, prior * (n * lam) ** 0.5])
    solution = torch.linalg.lstsq(a, b).solution
    return solution[:d], (solution[d] if intercept else None)


@pytest.mark.parametrize("ridge", [0.0, 0.05])
@pytest.mark.parametrize("intercept", [True, False])
def test_solver_matches_lstsq(ridge, intercept):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 7, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3, 7, dtype=torch.float64) + 0.5
    noise = 0.3 * torch.randn(300, 3, generator=g, dtype=torch.float64)
    y = x @ torch.randn(7, 3, generator=g, dtype=torch.float64) + noise + 2
    prior = torch.randn(7, 3, generator=g, dtype=torch.float64)
    eq = NormalEquations(7, 3)
    for rows in torch.arange(300).split(128):  # streamed in uneven batches, as the layers' rows are
        eq.add(x[rows], y[rows])
    weight, bias = eq.solve(ridge, prior=prior, intercept=intercept)
    ref_weight, ref_bias = lstsq_reference(x, y, ridge, prior, intercept)
    assert torch.allclose(weight, ref_weight, atol=1e-8)
    assert (bias is None) == (not intercept) and (bias is None or torch.allclose(bias, ref_bias, atol=1e-8))
    # the error read from the statistics alone is the error computed row by row
    fitted = x @ weight + (bias if bias is not None else 0)
    direct = float(((fitted - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    assert eq.relative_error(weight, bias) == pytest.approx(direct, rel=1e-9)
    if ridge:  # a stronger ridge pulls the solution towards the prior
        pulled, _ = eq.solve(100.0, prior=prior, intercept=intercept)
        assert (pulled - prior).norm() < (weight - prior).norm()


def test_solver_needs_rows():
    with pytest.raises(ModelError, match="no rows"):
        NormalEquations(2, 1).solve()


@pytest.fixture(scope="module")
def digits(digits_train, digits_test):
    return digits_train, digits_test


@pytest.fixture(scope="module")
def resnet_cut(digits):
    """ResNet-20 at 8 px trained 3 epochs on digits (~95 % test accuracy; a random network's
    features are noise, and so are its errors), its −50 % MACs L1 cut (residual channels
    included), and the original channels each layer kept."""
    torch.manual_seed(0)
    train, _ = digits
    with crosscheck.one_thread():
        model = build_model("resnet20", 1, 10, 8)
        fit(model, train, TrainConfig(epochs=3, lr=0.1, batch_size=64, quiet=True))
        model.eval()
        result = prune_filters(model, get_criterion("l1")(model), target_macs=0.5, input_shape=(1, 8, 8))
    assert any(len(c.idxs) for c in result.cuts if c.layer == "conv1")  # the residual stream of stage 1 is cut
    return model, result.model, kept_output_channels(model, result.model, result.cuts, (1, 8, 8))


def test_kept_channels_name_the_survivors(resnet_cut):
    model, cut, kept = resnet_cut
    modules, original = dict(cut.named_modules()), dict(model.named_modules())
    assert kept["conv1"] != list(range(16)) and len(kept["conv1"]) == cut.conv1.out_channels
    assert torch.equal(cut.conv1.weight, model.conv1.weight[kept["conv1"]])
    for conv, bn in [("conv1", "bn1"), ("layer2.0.conv2", "layer2.0.bn2"), ("layer3.2.conv1", "layer3.2.bn1"),
                     ("layer2.0.shortcut.0", "layer2.0.shortcut.1")]:
        assert torch.equal(modules[bn].running_mean, original[bn].running_mean[kept[conv]])


def where_fitted(done, name):
    """Where a refitted layer's fit shows: at the block's output for one feeding a residual add
    (its target is the sum), at its BatchNorm for a bias-free conv, else at the layer itself."""
    if name in done.partners:
        return ".".join(name.split(".")[:2]) + ".relu2"
    return done.norms.get(name, name)


def test_reconstruction_brings_every_layer_closer(resnet_cut, digits):
    """Measured on held-out images with both models whole: each refitted layer's response is
    closer to the original's than the recalibrated cut's."""
    model, cut, kept = resnet_cut
    train, test = digits
    recalibrated = copy.deepcopy(cut)
    recalibrate_batchnorm(recalibrated, train, images=512, quiet=True)
    rebuilt = copy.deepcopy(cut)
    done = reconstruct(model, rebuilt, train, kept, images=512, seed=0, quiet=True)
    assert len(done.layers) >= 19 and done.images == 512 and "conv1" not in done.layers  # the stem's input is intact
    where = {name: where_fitted(done, name) for name in done.layers}
    by_place = {**kept, **{place: kept[name] for name, place in where.items()}}
    before = layer_errors(model, recalibrated, test, list(where.values()), by_place, images=256)
    after = layer_errors(model, rebuilt, test, list(where.values()), by_place, images=256)
    for name, place in where.items():
        assert after[place] < before[place], (name, place, before[place], after[place])
    assert after["fc"] < 0.5 * before["fc"]  # the logits, where the errors of every layer meet
    assert all(done.error_after[n] <= done.error_before[n] + 1e-9 for n in done.layers)


def test_residual_adds_are_found_and_made_up_for(resnet_cut, digits):
    """The other operand of each residual add is found by its values — the skip stream (the
    previous block's output) or, in a down-sampling block, the other branch — and fitting the sum
    instead of the branch brings the blocks' outputs closer to the original's."""
    model, cut, kept = resnet_cut
    train, test = digits
    runs = {}
    for residual in (False, True):
        rebuilt = copy.deepcopy(cut)
        runs[residual] = reconstruct(model, rebuilt, train, kept, images=512, residual=residual, quiet=True), rebuilt
    done = runs[True][0]
    assert runs[False][0].partners == {}
    assert done.partners["layer1.0.conv2"] == "relu:output"
    assert done.partners["layer1.2.conv2"] == "layer1.1.relu2:output"
    assert done.partners["layer2.0.conv2"] == "layer2.0.shortcut.1:output"
    assert done.partners["layer2.0.shortcut.0"] == "layer2.0.bn2:output"
    assert len(done.partners) == 11 and not any(n.endswith("conv1") or n == "fc" for n in done.partners)
    blocks = {f"layer{s}.{b}.relu2": kept[f"layer{s}.{b}.conv2"] for s in (1, 2, 3) for b in (0, 1, 2)}
    errors = {r: layer_errors(model, m, test, list(blocks), blocks, images=256) for r, (_, m) in runs.items()}
    assert sum(errors[True].values()) < sum(errors[False].values()), errors
    assert errors[True]["layer3.2.relu2"] < errors[False]["layer3.2.relu2"]
    accuracy = {r: evaluate(m, test, quiet=True)["accuracy"] for r, (_, m) in runs.items()}
    assert accuracy[True] >= accuracy[False] - 0.005, accuracy


def test_residual_coupled_consumers_are_all_refitted(resnet_cut, digits):
    """Every layer that lost input channels — block convs, shortcuts, the classifier, all readers of
    the cut residual stream — is refitted, not just the layer after each cut."""
    model, cut, kept = resnet_cut
    rebuilt = copy.deepcopy(cut)
    done = reconstruct(model, rebuilt, digits[0], kept, images=128, quiet=True)
    original = dict(model.named_modules())
    consumers = [n for n, m in cut.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                 and m.weight.shape[1] < original[n].weight.shape[1]]
    assert {"layer1.0.conv1", "layer2.0.shortcut.0", "fc"} <= set(consumers)
    assert set(consumers) <= set(done.layers)
    changed = dict(rebuilt.named_modules())
    for name in consumers:
        assert not torch.equal(changed[name].weight, dict(cut.named_modules())[name].weight), name
    assert done.norms["layer1.0.conv2"] == "layer1.0.bn2"


def test_seeded(resnet_cut, digits):
    model, cut, kept = resnet_cut
    runs = []
    for seed in (3, 3, 4):
        rebuilt = copy.deepcopy(cut)
        reconstruct(model, rebuilt, digits[0], kept, images=96, positions=8, seed=seed, quiet=True)
        runs.append(torch.cat([p.detach().flatten() for p in rebuilt.state_dict().values() if p.is_floating_point()]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_linear_layers_on_tokens():
    """A transformer's linear layers read tokens: the positions sampled are tokens. Damaging the
    first MLP of a tiny ViT, reconstruction refits what follows (fc2, the next block's qkv and
    proj, the head) and finds the residual adds fc2 and proj feed; each fit shows closer to the
    original where it was aimed: at the residual stream for those two, at the layer otherwise."""
    torch.manual_seed(0)
    model = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24).eval()
    data = load_dataset("digits", split="test")
    silenced = copy.deepcopy(model)
    with torch.no_grad():
        silenced.blocks[0].mlp.fc1.weight[:12] = 0  # half the neurons silenced, as if cut
    rebuilt = copy.deepcopy(silenced)
    done = reconstruct(model, rebuilt, data, images=128, positions=5, quiet=True)
    assert done.layers == ["blocks.0.mlp.fc2", "blocks.1.attn.qkv", "blocks.1.attn.proj", "blocks.1.mlp.fc1",
                           "blocks.1.mlp.fc2", "head"]
    assert done.partners == {"blocks.0.mlp.fc2": "blocks.0.norm2:input", "blocks.1.attn.proj": "blocks.0:output",
                             "blocks.1.mlp.fc2": "blocks.1.norm2:input"}
    stream = {"blocks.0.mlp.fc2": "blocks.0", "blocks.1.attn.proj": "blocks.1.norm2", "blocks.1.mlp.fc2": "blocks.1"}
    places = [stream.get(name, name) for name in done.layers]
    before = layer_errors(model, silenced, data, places, images=128)
    after = layer_errors(model, rebuilt, data, places, images=128)
    assert all(after[p] < before[p] for p in places), (before, after)


def test_kept_channels_must_fit(resnet_cut, digits):
    model, cut, _ = resnet_cut
    with pytest.raises(ModelError, match="kept channels"):
        reconstruct(model, copy.deepcopy(cut), digits[0], {"layer1.0.conv1": [0, 1]}, images=8, quiet=True)


def test_job_reconstructs_an_iterative_prune():
    """After a prune in two re-scored steps, the channels each layer kept are read from the
    checkpoint recipe (every step), and reconstruction recovers most of the accuracy."""
    from neurotomy.jobs.prune import PruneJob
    from neurotomy.loading import load_model

    model, train, test = load_model("zoo:lenet5-digits"), load_dataset("digits"), load_dataset("digits", split="test")
    job = PruneJob(target_macs=0.6, steps=2, reconstruct=True, reconstruct_images=256, measure_latency=False,
                   quiet=True)
    pruned, record = job.run(model, train, test)
    assert record["acc_reconstructed"] > record["acc_recalibrated"] + 0.1 and record["reconstruction"]["layers"] == 4
    steps = pruned.neurotomy_meta.recipe[len(model.neurotomy_meta.recipe):]
    assert len({s["layer"] for s in steps}) < len(steps)  # a layer cut in both steps: indices of indices
    kept = kept_output_channels(model, pruned, [], (1, 8, 8))
    assert len(kept["features.3"]) == pruned.features[3].out_channels < 16
    # the stem is not refitted (its input is the image): its filters are the original's kept ones
    assert torch.equal(pruned.features[0].weight, model.features[0].weight[kept["features.0"]])


def test_missing_kept_channels_says_none_were_given_and_where_to_get_them():
    """A cut model without ``kept``: the error says no kept channels were given (not "16 indices
    into 16") and names the function that gives them for a prune_filters result."""
    original = build_model("lenet5", 1, 10, 8).eval()
    result = prune_filters(original, get_criterion("l1")(original), ratio=0.5, input_shape=(1, 8, 8))
    data = load_dataset("digits")
    with pytest.raises(ModelError, match=r"of the original's \d+ outputs and no kept channels were given .*"
                                         r"kept_output_channels\(original, result.model, result.cuts"):
        reconstruct(original, copy.deepcopy(result.model), data, images=32, quiet=True)
    with pytest.raises(ModelError, match=r"kept\['features.3'\] gives 1 indices into the original's"):
        reconstruct(original, copy.deepcopy(result.model), data, {"features.3": [0]}, images=32, quiet=True)
    kept = kept_output_channels(original, result.model, result.cuts, (1, 8, 8))
    assert reconstruct(original, result.model, data, kept, images=32, quiet=True).layers


def test_reconstruct_is_exported_as_the_function():
    """The README's ``neurotomy.reconstruct`` is the function, also after its module was imported."""
    import neurotomy
    import neurotomy.reconstruct  # noqa: F401  (binds the package attribute to the module unless handled)

    assert neurotomy.reconstruct is reconstruct and "reconstruct" in neurotomy.__all__
