import pytest
import torch

from neurotomy.data import load_dataset
from neurotomy.data.subsets import balanced_indices
from neurotomy.dynamics.layer_rules import LAYER_RULES, block_similarity, choose_blocks
from neurotomy.errors import PruningError
from neurotomy.models import build_model
from neurotomy.models.anatomy import removable_blocks
from tests.crosscheck import one_thread
from tests.toy_data import patch_dataset


def _feature_space_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA by its feature-space formula ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on centred
    features (Kornblith et al. 2019, eq. 5) — not through the Gram matrices the code uses."""
    x = x.flatten(1).double()
    y = y.flatten(1).double()
    x, y = x - x.mean(0), y - y.mean(0)
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


@pytest.mark.parametrize("arch", ["resnet20", "vgg11_bn"])
def test_block_similarity_matches_feature_space_cka(arch, one_thread):
    torch.manual_seed(0)
    model = build_model(arch, 1, 10, 8).eval()
    data = patch_dataset(60, seed=0)  # 8×8 images, two classes
    blocks = removable_blocks(model, keep_downsampling=False)
    sims = block_similarity(model, data, blocks, per_class=15, seed=3)
    images = torch.stack([data[int(i)][0] for i in balanced_indices(data.targets, 15, 3)])
    modules = dict(model.named_modules())
    for block in blocks:
        # input and output by plain hooks: a plain block's input is its conv's input
        first = modules[block] if arch == "resnet20" else modules[block.rsplit(".", 1)[0] + "." +
                                                                   str(int(block.rsplit(".", 1)[1]) - 2)]
        seen = {}
        hooks = [first.register_forward_hook(lambda m, i, o: seen.update(x=i[0])),
                 modules[block].register_forward_hook(lambda m, i, o: seen.update(y=o))]
        with torch.no_grad():
            model(images)
        for h in hooks:
            h.remove()
        assert sims[block] == pytest.approx(_feature_space_cka(seen["x"], seen["y"]), rel=1e-6)


def test_cka_rule_takes_the_most_similar_blocks():
    model = build_model("resnet20", 1, 10, 8).eval()
    with one_thread():
        chosen, basis = choose_blocks(model, "cka", patch_dataset(40, seed=1), count=3, per_class=10)
    ranked = sorted(basis["cka"], key=basis["cka"].get, reverse=True)
    assert set(chosen) == set(ranked[:3]) and chosen == [b for b in removable_blocks(model) if b in chosen]
    with pytest.raises(PruningError, match="needs data"):
        choose_blocks(model, "cka", None, count=1)
    assert "cka" in LAYER_RULES


def test_cka_rule_ranks_a_block_without_cka_last(monkeypatch):
    """A block with a constant input or output has CKA NaN (undefined): never taken as the most
    similar, whatever its place in the sort."""
    import neurotomy.dynamics.layer_rules as layer_rules

    model = build_model("resnet20", 1, 10, 8).eval()
    blocks = removable_blocks(model)
    similarity = {block: 0.5 for block in blocks} | {blocks[-1]: float("nan"), blocks[0]: 0.9}
    monkeypatch.setattr(layer_rules, "block_similarity", lambda *args, **kwargs: similarity)
    chosen, _ = choose_blocks(model, "cka", patch_dataset(4, seed=1), count=2, per_class=1)
    assert chosen == [blocks[0], blocks[-2]]


@pytest.mark.parametrize("method", ["modularity", "cka", "random", "last"])
def test_rules_choose_plain_blocks_of_vgg(method):
    model = build_model("vgg16_bn", 1, 10, 28).eval()
    with one_thread():
        chosen, _ = choose_blocks(model, method, load_dataset("fashion-mnist", split="test"), count=2, per_class=10)
    assert len(chosen) == 2 and set(chosen) <= set(removable_blocks(model))
