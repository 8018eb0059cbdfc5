"""MLP sites written as a pre-norm Sequential (torchvision's MaxViT), found and pruned by neuron; MaxViT's
relative-position attention found as an attention site (its heads: tests/surgery/test_relative_position_heads.py)."""

import pytest
import torch
from torch import nn

from neurotomy.models.transformer import attention_sites, mlp_sites


def _mlp(norm: nn.Module | None, dim: int = 8, hidden: int = 32, back: int | None = None) -> nn.Sequential:
    layers = [nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(), nn.Linear(hidden, dim if back is None else back)]
    return nn.Sequential(*([norm] if norm is not None else []), *layers)


@pytest.mark.parametrize("norm", [nn.LayerNorm(8), nn.GroupNorm(1, 8), nn.BatchNorm1d(8)])
def test_a_leading_norm_is_skipped_and_the_names_point_at_the_linears(norm):
    model = nn.Sequential(nn.Linear(8, 8), _mlp(norm))
    (site,) = mlp_sites(model)
    assert (site.name, site.fc1_name, site.act_name, site.fc2_name, site.hidden) == ("1", "1.1", "1.2", "1.4", 32)
    assert isinstance(model.get_submodule(site.fc1_name), nn.Linear)
    assert isinstance(model.get_submodule(site.act_name), nn.GELU)
    assert model.get_submodule(site.fc2_name).in_features == 32


def test_without_a_norm_the_old_form_still_holds_and_other_leads_do_not_count():
    (site,) = mlp_sites(nn.Sequential(_mlp(None)))
    assert (site.fc1_name, site.act_name, site.fc2_name, site.hidden) == ("0.0", "0.1", "0.3", 32)
    assert mlp_sites(nn.Sequential(_mlp(nn.Identity()))) == []  # only a normalisation layer may lead
    assert mlp_sites(nn.Sequential(_mlp(nn.LayerNorm(8), back=4))) == []  # not dim → hidden → dim
    assert mlp_sites(nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))) == []  # a norm and a linear: no MLP


@pytest.fixture(scope="module")
def maxvit():
    from neurotomy.loading import load_model

    # one thread: the trace and the 224 px passes are many small ops, which two threads on a busy
    # two-core machine made 20× slower (2 s → 45 s); the smallest input maxvit_t takes is 224 px
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        yield load_model("torchvision:maxvit_t", in_channels=3, num_classes=10, input_size=224)
    finally:
        torch.set_num_threads(threads)


def test_maxvit_mlps_are_found_with_their_names_and_widths(maxvit):
    # independently: every PartitionAttentionLayer's mlp_layer is LayerNorm, Linear, GELU, Linear, Dropout
    expected = [(f"{n}.mlp_layer", *(f"{n}.mlp_layer.{i}" for i in (1, 2, 3)), m.mlp_layer[1].out_features)
                for n, m in maxvit.named_modules() if type(m).__name__ == "PartitionAttentionLayer"]
    found = [(s.name, s.fc1_name, s.act_name, s.fc2_name, s.hidden) for s in mlp_sites(maxvit)]
    assert found == expected and len(found) == 22  # maxvit_t: (2, 2, 5, 2) layers, a window and a grid MLP each
    assert sorted({s.hidden for s in mlp_sites(maxvit)}) == [256, 512, 1024, 2048]  # 4 × (64, 128, 256, 512)
    # its relative-position attention: to_qkv / merge / n_heads, one per PartitionAttentionLayer (next to each MLP)
    assert [s.name for s in attention_sites(maxvit)] == [f"{n[:-len('mlp_layer')]}attn_layer.1" for n, *_ in expected]


def test_maxvit_neurons_prune_at_a_ratio_and_heads_are_scored(maxvit):
    from neurotomy.scores import score_transformer
    from neurotomy.surgery.transformer import prune_transformer

    heads = score_transformer(maxvit, "l1", "head")
    assert list(heads) == [s.name for s in attention_sites(maxvit)] and heads[list(heads)[0]].shape == (2,)
    scores = score_transformer(maxvit, "l1", "neuron")
    first = mlp_sites(maxvit)[0]
    w1 = maxvit.get_submodule(first.fc1_name).weight.detach().clone()
    hidden = {s.fc1_name: s.hidden for s in mlp_sites(maxvit)}
    assert torch.allclose(scores[first.fc1_name].float(), w1.abs().sum(1) + maxvit.get_submodule(
        first.fc2_name).weight.detach().abs().sum(0), rtol=1e-4)  # l1 of fc1 rows + fc2 columns
    result = prune_transformer(maxvit, scores, units="neurons", ratio=0.2)
    model = result.model
    for name, width in hidden.items():
        assert model.get_submodule(name).out_features == width - int(0.2 * width)
        assert model.get_submodule(name.rsplit(".", 1)[0] + ".3").in_features == width - int(0.2 * width)
    assert result.details["neurons_removed"] == sum(int(0.2 * w) for w in hidden.values())
    assert 0 < result.macs_reduction < 0.2
    # the rows that stay are the best-scored ones, in their order
    keep = torch.sort(torch.topk(scores[first.fc1_name], w1.shape[0] - int(0.2 * w1.shape[0])).indices).values
    assert torch.equal(model.get_submodule(first.fc1_name).weight.detach(), w1[keep])
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
