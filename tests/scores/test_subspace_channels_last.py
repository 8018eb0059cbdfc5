"""Relevant subspaces of a channels-last layer (N × H × W × d: timm's Swin, ConvNeXt blocks): the channel
vectors are the LAST axis. The layer statistics against the model split by hand (no hooks) and against a
channels-first twin (the same map handed on as N × d × H × W); PRCA, DRSA and the subspace heatmaps found on
both readings agree; the reading from before issue #21 (axis 1 as the channels) is shown to fail."""

import pytest
import torch

import neurotomy.scores.subspace as subspace_module
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.errors import ModelError, NeurotomyError, OptionError
from neurotomy.models.map_layouts import MapLayouts
from neurotomy.scores.subspace import (channel_rows, channels_back, channels_last, find_subspaces,
                                       layout_of, observe_layer, subspace_heatmaps)
from tests.channels_last_cases import TinyChannelsLast, channels_first_twin, images, tiny_timm_swin

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread per test

REAL_LAYOUT_OF = subspace_module.layout_of


def axis_one_layout(output, last_axis=None):
    """The reading before issue #21: every 4-D output channels-first, whatever module produced it."""
    return REAL_LAYOUT_OF(output)


def dataset(n: int, shape: tuple[int, ...], classes: int) -> TensorImageDataset:
    labels = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(2))
    return TensorImageDataset(images(n, shape, dtype=torch.float32), labels, [str(c) for c in range(classes)],
                              Normalization.identity(shape[0]))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TinyChannelsLast().double().eval(), dataset(24, (3, 12, 20), 10)


@pytest.fixture(scope="module")
def swin():
    return tiny_timm_swin().double(), dataset(4, (3, 64, 64), 4)


def projector(bases):
    joint = torch.cat(list(bases), 1)
    return joint @ joint.T


def test_a_channels_last_map_has_its_channel_vectors_on_the_last_axis():
    x = torch.randn(2, 5, 3, 4)
    assert layout_of(x) == layout_of(x, False) == "channels_first" and layout_of(x, True) == "channels_last"
    assert layout_of(torch.zeros(2, 7, 4), False) == "channels_last"  # tokens have one reading
    torch.testing.assert_close(channel_rows(x, "channels_last"), x.reshape(2, 15, 4))
    torch.testing.assert_close(channel_rows(x), x.permute(0, 2, 3, 1).reshape(2, 12, 5))
    assert channels_last(x, "channels_last") is x
    torch.testing.assert_close(channels_back(channels_last(x, "channels_first"), "channels_first"), x)
    with pytest.raises(OptionError, match="unknown layout 'nhwc'"):
        channel_rows(x, "nhwc")
    with pytest.raises(ModelError, match="has no channel vectors"):
        layout_of(torch.zeros(2, 3, 4, 5, 6), True)


def test_map_layouts_read_the_producing_modules(tiny, swin):
    for model, x, expected in ((tiny[0], images(1, (3, 12, 20)), {"stem": False, "proj": True, "norm": True,
                                                                  "act": True}),
                               (swin[0], images(1, (3, 64, 64)), {"patch_embed.proj": False, "layers.2": True,
                                                                  "layers.2.blocks.1": True, "norm": True})):
        layouts = MapLayouts()
        with torch.no_grad(), layouts.watch(model):
            model(x)
        assert {name: layouts.channels_last[name] for name in expected} == expected
    twin, layer = channels_first_twin(tiny[0], "act")
    layouts = MapLayouts()
    with torch.no_grad(), layouts.watch(twin):
        twin(images(1, (3, 12, 20)))
    assert layouts.layout(layer) == "channels_first" and layouts.layout("act.0") == "channels_last"


def test_layer_statistics_of_a_channels_last_map_match_a_hook_free_computation(tiny):
    model, data = tiny
    stats = observe_layer(model, data, "act", max_images=24, batch_size=8, positions=5, quiet=True)
    assert stats.layout == "channels_last" and stats.channels == 8 and stats.rows == 24 * 60
    # every image once: the sums do not depend on the shuffle
    a = model.features(data.images.double()).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.rest(a).gather(1, data.targets[:, None]).sum(), a)
    rows_a, rows_c = a.detach().reshape(24, 60, 8), grad.reshape(24, 60, 8)
    torch.testing.assert_close(stats.cross, torch.einsum("npi,npj->ij", rows_a, rows_c), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(stats.second, torch.einsum("npi,npj->ij", rows_a, rows_a), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(stats.mean, rows_a.reshape(-1, 8).mean(0), rtol=1e-9, atol=1e-12)
    assert stats.total_relevance == pytest.approx(float((a.detach() * grad).sum()) / 24, rel=1e-9)


def test_a_channels_last_layer_and_its_channels_first_twin_give_the_same_subspaces(tiny):
    model, data = tiny
    twin, layer = channels_first_twin(model, "act")
    ours = observe_layer(model, data, "act", max_images=24, batch_size=8, positions=5, quiet=True)
    theirs = observe_layer(twin, data, layer, max_images=24, batch_size=8, positions=5, quiet=True)
    assert (ours.layout, theirs.layout) == ("channels_last", "channels_first")
    for field in ("cross", "second", "total", "activations", "contexts"):  # the same positions are sampled
        torch.testing.assert_close(getattr(ours, field), getattr(theirs, field), rtol=1e-6, atol=1e-9)
    for method, options in (("prca", {}), ("pca", {}), ("drsa", {"steps": 30, "restarts": 1})):
        mine, twins = (find_subspaces(s, method, subspaces=2, size=2, **options) for s in (ours, theirs))
        torch.testing.assert_close(projector(mine), projector(twins), rtol=0, atol=1e-6)


def test_the_axis_one_reading_fails_these_checks(tiny, monkeypatch):
    model, data = tiny
    monkeypatch.setattr(subspace_module, "layout_of", axis_one_layout)
    stats = observe_layer(model, data, "act", max_images=24, batch_size=8, positions=5, quiet=True)
    assert stats.layout == "channels_first" and stats.channels == 6  # the map's height taken for channels
    with pytest.raises(NeurotomyError, match="need 7 dimensions; layer 'act' has 6"):
        find_subspaces(stats, "prca", subspaces=7)


def test_swin_subspaces_and_heatmaps_equal_the_channels_first_twin(swin):
    model, data = swin
    twin, layer = channels_first_twin(model, "layers.2")  # N × 4 × 4 × 128
    ours = observe_layer(model, data, "layers.2", max_images=4, batch_size=2, positions=4, quiet=True)
    theirs = observe_layer(twin, data, layer, max_images=4, batch_size=2, positions=4, quiet=True)
    assert (ours.layout, ours.channels, ours.rows) == ("channels_last", 128, 4 * 16)
    torch.testing.assert_close(ours.cross, theirs.cross, rtol=1e-6, atol=1e-9)
    bases = find_subspaces(ours, "prca", subspaces=2, size=2)
    torch.testing.assert_close(projector(bases), projector(find_subspaces(theirs, "prca", subspaces=2, size=2)),
                               rtol=0, atol=1e-6)
    x, t = data.images.double(), data.targets
    maps = subspace_heatmaps(model, x, t, "layers.2", bases)
    assert maps.shape == (4, 3, 3, 64, 64)
    torch.testing.assert_close(maps, subspace_heatmaps(twin, x, t, layer, bases), rtol=1e-9, atol=1e-12)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(leaf).gather(1, t[:, None]).sum(), leaf)
    torch.testing.assert_close(maps.sum(1), leaf.detach() * grad, rtol=0, atol=1e-10)  # with the rest: complete


def test_swin_axis_one_reading_sees_four_channels(swin, monkeypatch):
    model, data = swin
    monkeypatch.setattr(subspace_module, "layout_of", axis_one_layout)
    stats = observe_layer(model, data, "layers.2", max_images=2, batch_size=2, positions=4, quiet=True)
    assert stats.channels == 4  # the map's height: the bug of issue #21
