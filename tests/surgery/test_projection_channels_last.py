"""Projections of a channels-last layer (N × H × W × d: timm's Swin, ConvNeXt blocks): Linear pairs over the
last axis, the formula a ↦ μ + UUᵀ(a − μ) against a plain forward hook, the same logits as the projection of a
channels-first twin, the fold into a Linear that outputs such a map, and the recipe replayed from a checkpoint.
Under the reading from before issue #21 (axis 1 as the channels) the same requests are refused."""

import copy

import pytest
import torch

import neurotomy.surgery.projection as projection_module
from neurotomy.checkpoint import save_checkpoint
from neurotomy.errors import PruningError
from neurotomy.loading import load_model
from neurotomy.scores.subspace import layout_of, orthonormal_complement, random_basis
from neurotomy.surgery.projection import ProjectedLayer, output_layout, project_layer, remove_subspace
from tests.channels_last_cases import channels_first_twin, images, tiny_timm_swin

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread per test

SWIN_INPUT = (3, 64, 64)
FACTORY = '''  # a user's model file (path/to/file.py:make): the model tests.channels_last_cases.TinyChannelsLast
import torch
from torch import nn


class TinyChannelsLast(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.proj, self.norm, self.act = nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.act(self.norm(self.proj(self.stem(x).permute(0, 2, 3, 1)))).mean((1, 2)))


def make(num_classes=10):
    torch.manual_seed(0)
    return TinyChannelsLast(num_classes)
'''


def hand_projected(model, layer, basis, mean, x):
    """Logits with ``layer``'s output replaced by μ + (a − μ)UUᵀ over its last axis (a plain torch hook)."""
    p = (basis @ basis.T).to(x.dtype)
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, out: mean.to(x.dtype) + (out - mean) @ p)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def swin():
    return tiny_timm_swin().double()


def test_a_swin_stage_is_projected_by_linear_layers_over_its_last_axis(swin):
    x, basis, mean = images(2, SWIN_INPUT), random_basis(128, 5, seed=1), torch.randn(128, dtype=torch.float64)
    assert output_layout(swin, "layers.2", SWIN_INPUT) == ("channels_last", 128)
    projected = project_layer(swin, "layers.2", basis, mean, input_shape=SWIN_INPUT)
    pair = projected.get_submodule("layers.2")
    assert isinstance(pair, ProjectedLayer) and isinstance(pair.down, torch.nn.Linear) and pair.down.out_features == 5
    with torch.no_grad():
        ours = projected(x)
    torch.testing.assert_close(ours, hand_projected(swin, "layers.2", basis, mean, x), rtol=1e-9, atol=1e-10)
    assert not torch.allclose(ours, swin(x).detach(), atol=1e-3)  # five of 128 directions: the logits move
    # the twin's 1×1-conv pair on N × 128 × 4 × 4 computes the same; in float32, because the pair around a
    # parameter-free layer (the twin's permute) is built in float32 whatever the model's dtype
    twin, layer = channels_first_twin(copy.deepcopy(swin).float(), "layers.2")
    assert output_layout(twin, layer, SWIN_INPUT) == ("channels_first", 128)
    with torch.no_grad():
        torch.testing.assert_close(project_layer(twin, layer, basis, mean, input_shape=SWIN_INPUT)(x.float()),
                                   ours.float(), rtol=1e-4, atol=1e-5)
        removed = remove_subspace(swin, "layers.2", basis, mean, input_shape=SWIN_INPUT)(x)
    torch.testing.assert_close(removed, hand_projected(swin, "layers.2", orthonormal_complement(basis), mean, x),
                               rtol=1e-9, atol=1e-10)


def test_the_axis_one_reading_refuses_a_swin_basis(swin, monkeypatch):
    monkeypatch.setattr(projection_module, "layout_of", lambda output, last_axis=None: layout_of(output))
    with pytest.raises(PruningError, match="has 128 rows but the layer has 4 channels"):
        project_layer(swin, "layers.2", random_basis(128, 5, seed=1), input_shape=SWIN_INPUT)


def test_fold_into_a_linear_with_a_channels_last_output_and_reload(tmp_path):
    factory = tmp_path / "channels_last_net.py"
    factory.write_text(FACTORY)
    model = load_model(f"{factory}:make", input_size=12)
    assert output_layout(model, "proj") == ("channels_last", 8)
    x, basis, mean = images(3, (3, 12, 12), dtype=torch.float32), random_basis(8, 3, seed=4), torch.randn(8)
    folded = project_layer(model, "proj", basis, mean, fold=True)
    assert folded.proj.layer.out_features == 3 and isinstance(folded.proj.down, torch.nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), hand_projected(model, "proj", basis.float(), mean, x), rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(folded(x), project_layer(model, "proj", basis, mean)(x), rtol=1e-5, atol=1e-5)
    projected = project_layer(folded, "act", random_basis(8, 5, seed=5))  # a GELU: its layout from the norm
    assert projected.neurotomy_meta.recipe[-2:] == [
        {"op": "project_subspace", "layer": "proj", "channels": 8, "rank": 3, "layout": "channels_last",
         "folded": True},
        {"op": "project_subspace", "layer": "act", "channels": 8, "rank": 5, "layout": "channels_last",
         "folded": False}]
    loaded = load_model(str(save_checkpoint(projected, tmp_path / "projected.safetensors")))
    with torch.no_grad():
        assert torch.equal(loaded(x), projected(x))
    assert isinstance(loaded.act, ProjectedLayer) and isinstance(loaded.act.up, torch.nn.Linear)

