import pytest
import torch

from neurotomy.checkpoint import ModelMeta, save_checkpoint
from neurotomy.loading import load_checkpoint
from neurotomy.errors import PruningError
from neurotomy.models import build_model
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters
from neurotomy.models.anatomy import removable_blocks
from neurotomy.surgery.layers import remove_blocks
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
