"""Projections of a layer's output onto kept directions (neurotomy.surgery.projection): identity on
the full space, the formula a ↦ μ + UUᵀ(a − μ) against a hand computation, the fold, and the recipe."""

import copy

import pytest
import torch

from neurotomy.checkpoint import save_checkpoint
from neurotomy.errors import CheckpointError, PruningError
from neurotomy.loading import load_model
from neurotomy.models import build_model
from neurotomy.probe import Probe
from neurotomy.scores.subspace import random_basis
from neurotomy.surgery.projection import ProjectedLayer, project_layer, remove_subspace
from neurotomy.surgery.recipe import replay_recipe


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread per test


def output_of(model, layer, x):
    seen = {}
    with torch.no_grad(), Probe(model, [layer], on_output=lambda _, out: seen.update(out=out)):
        logits = model(x)
    return seen["out"], logits


def test_full_space_is_the_identity(lenet):
    x = torch.randn(4, 1, 8, 8)
    for layer in ("features.3", "classifier.2"):  # a conv output and a flat Linear output
        width = 16 if layer == "features.3" else 120
        full = project_layer(lenet, layer, random_basis(width, width, seed=1), torch.randn(width))
        torch.testing.assert_close(full(x), lenet(x), atol=1e-4, rtol=1e-4)
    vit = build_model("vit_tiny", 1, 10, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24).eval()
    tokens = project_layer(vit, "blocks.0", random_basis(16, 16, seed=2), input_shape=(1, 8, 8))
    assert isinstance(tokens.blocks[0].up, torch.nn.Linear)  # tokens × channels: a Linear pair
    torch.testing.assert_close(tokens(x), vit(x), atol=1e-4, rtol=1e-4)
    resnet = build_model("resnet20", 1, 10, 8).eval()
    full = project_layer(resnet, "layer3.2", torch.eye(64), input_shape=(1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(full(x), resnet(x), atol=1e-5, rtol=1e-5)


def test_projection_matches_the_formula(lenet):
    x = torch.randn(3, 1, 8, 8)
    basis, mean = random_basis(16, 5, seed=0), torch.randn(16, dtype=torch.float64)
    projected = project_layer(lenet, "features.3", basis, mean)
    a, _ = output_of(lenet, "features.3", x)
    rows = a.double().movedim(1, -1)
    expected = (mean + (rows - mean) @ basis @ basis.T).movedim(-1, 1)
    b, logits = output_of(projected, "features.3", x)
    torch.testing.assert_close(b.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, lenet.classifier(lenet.features[4:](expected.float())), atol=1e-4, rtol=1e-4)
    # removing the directions keeps the complement: the two changes add up to the whole (minus the mean)
    removed = remove_subspace(lenet, "features.3", basis, mean)
    c, _ = output_of(removed, "features.3", x)
    torch.testing.assert_close((b + c).double() - mean.view(1, -1, 1, 1), a.double(), atol=1e-5, rtol=1e-5)
    assert projected.neurotomy_meta.recipe[-1] == {"op": "project_subspace", "layer": "features.3", "channels": 16,
                                                   "rank": 5, "layout": "channels_first", "folded": False}
    assert lenet.neurotomy_meta.recipe == []  # the original is untouched


def test_fold_into_the_conv_is_the_same_function(lenet):
    x = torch.randn(3, 1, 8, 8)
    basis, mean = random_basis(16, 4, seed=5), torch.randn(16)
    pair = project_layer(lenet, "features.3", basis, mean)
    folded = project_layer(lenet, "features.3", basis, mean, fold=True)
    assert folded.features[3].layer.out_channels == 4 and isinstance(folded.features[3].down, torch.nn.Identity)
    torch.testing.assert_close(folded(x), pair(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(PruningError, match="only a plain Conv2d or Linear"):
        project_layer(lenet, "features.4", basis, fold=True)


@pytest.mark.parametrize("fold", [False, True])
def test_recipe_reload_gives_identical_outputs(lenet, tmp_path, fold):
    projected = project_layer(lenet, "features.3", random_basis(16, 6, seed=2), torch.randn(16), fold=fold)
    projected = project_layer(projected, "classifier.4", random_basis(84, 10, seed=3))  # a second, flat one
    path = save_checkpoint(projected, tmp_path / "projected.safetensors")
    loaded = load_model(str(path))
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(loaded(x), projected(x))
    assert [s["op"] for s in loaded.neurotomy_meta.recipe] == ["project_subspace"] * 2
    assert isinstance(loaded.classifier[4], ProjectedLayer)


def test_resnet_block_projection_reloads(tmp_path):
    from neurotomy.checkpoint import ModelMeta

    resnet = build_model("resnet20", 1, 10, 8).eval()
    resnet.neurotomy_meta = ModelMeta(arch="resnet20", arch_args={"in_channels": 1, "num_classes": 10,
                                                                  "input_size": 8})
    projected = project_layer(resnet, "layer3.2", random_basis(64, 8, seed=0), torch.randn(64))
    loaded = load_model(str(save_checkpoint(projected, tmp_path / "r.safetensors")))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), projected(x))


def test_bad_requests_and_corrupt_recipes(lenet):
    with pytest.raises(PruningError, match="has 10 rows but the layer has 16 channels"):
        project_layer(lenet, "features.3", torch.eye(10))
    with pytest.raises(PruningError, match="not orthonormal"):
        project_layer(lenet, "features.3", torch.ones(16, 2))
    with pytest.raises(PruningError, match="no layer 'nope'"):
        project_layer(lenet, "nope", torch.eye(16))
    with pytest.raises(PruningError, match="leaves nothing"):
        remove_subspace(lenet, "features.3", torch.eye(16))
    fresh = build_model("lenet5", 1, 10, 8)
    for bad in ({"channels": 16, "rank": 17, "layout": "channels_first", "folded": False},
                {"channels": 16, "rank": 2, "layout": "sideways", "folded": False},
                {"channels": 16, "rank": 2, "layout": "channels_first", "folded": "yes"}):
        with pytest.raises(CheckpointError, match="checkpoint is corrupt"):
            replay_recipe(fresh, [{"op": "project_subspace", "layer": "features.3", **bad}], (1, 8, 8))
    with pytest.raises(CheckpointError, match="folds a projection into 'features.4'"):
        replay_recipe(fresh, [{"op": "project_subspace", "layer": "features.4", "channels": 16, "rank": 2,
                               "layout": "channels_first", "folded": True}], (1, 8, 8))


def test_a_parameter_free_layer_of_a_float64_model(lenet):
    # features.4 is a ReLU: the pair takes the model's dtype, not a float32 default
    model = copy.deepcopy(lenet).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    basis, mean = random_basis(16, 5, seed=4), torch.randn(16, dtype=torch.float64)
    projected = project_layer(model, "features.4", basis, mean)
    assert {p.dtype for p in projected.parameters()} == {torch.float64}
    a = torch.relu(model.features[:4](x))  # the ReLU's output, by hand
    expected = (mean + (a.movedim(1, -1) - mean) @ basis @ basis.T).movedim(-1, 1)
    b, logits = output_of(projected, "features.4", x)
    torch.testing.assert_close(b, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(logits, model.classifier(model.features[5:](expected)), atol=1e-12, rtol=1e-12)
    # the recipe's replay on a float64 architecture builds the same float64 pair
    fresh = build_model("lenet5", 1, 10, 8).double()
    replay_recipe(fresh, projected.neurotomy_meta.recipe, (1, 8, 8))
    fresh.load_state_dict(projected.state_dict())
    assert torch.equal(fresh.eval()(x), logits)
