"""Heads of attention with a relative position bias (timm's Swin, torchvision's MaxViT) are removed with
their bias; torchvision's Swin (V1, V2) and timm's Swin V2 keep theirs, refused by name.

The independent check: a random-init model with heads H of layer L removed computes what the
ORIGINAL model computes with those heads' context zeroed — the output projection's input columns of
H set to zero in a copy, nothing else touched (a head whose context is zero no longer matters, nor
does its column of the bias table). The cut, by contrast, slices q/k/v rows, proj columns, the bias
table and rewrites the head count.
"""

import copy

import pytest
import torch
from torch import nn

from torchvision.models.maxvit import RelativePositionalMultiHeadAttention

from neurotomy.checkpoint import save_checkpoint
from neurotomy.errors import ModelError, NeurotomyError, PruningError
from neurotomy.loading import load_model
from neurotomy.models.summary import flop_counter_macs, layer_table
from neurotomy.models.transformer import attention_sites, mlp_sites
from neurotomy.scores import score_transformer
from neurotomy.surgery.attention import head_refusal, remove_heads
from neurotomy.surgery.relative_attention import HeadwiseRelativePositionalMultiHeadAttention
from neurotomy.surgery.transformer import (HeadCut, TransformerPlanner, TransformerUnits, apply_transformer_cuts,
                                           prune_transformer)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: many small ops, one thread


def _site(model, layer):
    return next(s for s in attention_sites(model) if s.name == layer)


def context_zeroed(model, layer, heads):
    """A copy of ``model`` whose heads ``heads`` of ``layer`` write nothing: their proj input columns are 0."""
    ref = copy.deepcopy(model).eval()
    site = _site(ref, layer)
    columns = [h * site.head_dim + j for h in heads for j in range(site.head_dim)]
    with torch.no_grad():
        site.proj.weight[:, columns] = 0
    return ref


def check_equivalent(model, layer, heads, x, table_axis=-1):
    """Remove ``heads`` of ``layer`` from a copy; it must equal the context-zeroed original, which must
    differ from the original itself (else the check could not fail)."""
    site = _site(model, layer)
    table = site.module.relative_position_bias_table.detach().clone() \
        if hasattr(site.module, "relative_position_bias_table") else None
    pruned = copy.deepcopy(model).eval()
    remove_heads(pruned, layer, heads)
    kept = [h for h in range(site.num_heads) if h not in heads]
    with torch.no_grad():
        out, expected, original = pruned(x), context_zeroed(model, layer, heads)(x), model.eval()(x)
    assert (expected - original).abs().max() > 1e-4  # those heads did contribute
    assert torch.allclose(out, expected, atol=1e-5), (out - expected).abs().max()
    new = _site(pruned, layer)
    assert new.num_heads == len(kept) and new.head_dim == site.head_dim
    assert new.qkv.out_features == 3 * len(kept) * site.head_dim and new.proj.in_features == len(kept) * site.head_dim
    if table is not None:  # the kept heads' columns, in order
        assert torch.equal(new.module.relative_position_bias_table.detach(), table.index_select(table_axis,
                                                                                            torch.tensor(kept)))
    return pruned


# --------------------------------------------------------------------------- torchvision Swin: refused

SWIN_REFUSAL = ("torchvision's Swin attention derives each head's width from the model width, so its heads cannot "
                "be cut; cut its MLP neurons or filters, or use timm's swin_* models, whose heads can be cut")


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return load_model("torchvision:swin_t", in_channels=3, num_classes=10, input_size=64).eval()


@pytest.fixture(scope="module")
def swin_v2():
    torch.manual_seed(0)
    return load_model("torchvision:swin_v2_t", in_channels=3, num_classes=10, input_size=64).eval()


@pytest.mark.parametrize("fixture", ["swin", "swin_v2"])
def test_torchvision_swin_heads_are_refused_by_name(request, fixture):
    model = request.getfixturevalue(fixture)
    sites = attention_sites(model)
    assert len(sites) == 12 and all(head_refusal(s) == SWIN_REFUSAL for s in sites)
    layer = sites[0].name
    qkv = sites[0].qkv.weight.detach().clone()
    with pytest.raises(PruningError, match=rf"cannot remove heads of {layer}: torchvision's Swin attention derives "
                                           r".*; keep its heads"):
        remove_heads(model, layer, [0])
    assert torch.equal(_site(model, layer).qkv.weight, qkv) and _site(model, layer).num_heads == 3  # untouched
    with pytest.raises(PruningError, match=rf"no scores for the heads of this model \(12 layer\(s\).*{layer}.*"
                                           r"torchvision's Swin attention derives each head's width"):
        prune_transformer(model, score_transformer(model, "l1", "head"), units="heads", ratio=1 / 3)


def test_torchvision_swin_neurons_still_prune(swin):
    before = {m.fc1_name: m.hidden for m in mlp_sites(swin)}
    result = prune_transformer(swin, score_transformer(swin, "l1", "neuron"), units="neurons", ratio=0.25)
    after = {m.fc1_name: m.hidden for m in mlp_sites(result.model)}
    assert after.keys() == before.keys() and all(after[n] < before[n] for n in before)
    assert 0 < result.macs_reduction < 0.25
    assert {s.name: s.num_heads for s in attention_sites(result.model)} == {
        s.name: s.num_heads for s in attention_sites(swin)}
    with torch.no_grad():
        assert result.model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


# --------------------------------------------------------------------------- timm Swin

@pytest.fixture(scope="module")
def timm_swin():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=2,
                             num_classes=4, depths=(2, 2, 2, 2), embed_dim=32, num_heads=(2, 2, 4, 4)).eval()


@pytest.mark.parametrize("layer,heads", [("layers.0.blocks.1.attn", [0]), ("layers.2.blocks.0.attn", [1, 2])])
def test_timm_swin_heads_equal_their_context_zeroed(timm_swin, layer, heads):
    pruned = check_equivalent(timm_swin, layer, heads, torch.randn(2, 3, 64, 64))
    # timm's forward reshapes with -1: its own class runs the pruned weights, and the fused path agrees
    attn = pruned.get_submodule(layer)
    assert type(attn).__name__ == "WindowAttention"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fused = pruned(x)
        attn.fused_attn = not attn.fused_attn
        assert torch.allclose(pruned(x), fused, atol=1e-5)


def test_rollout_refuses_windowed_relative_position_attention(timm_swin):
    from neurotomy.explain.rollout import gradient_rollout

    # its recomputed softmax(q·kᵀ) would leave the bias out: refused by name, not a wrong map
    with pytest.raises(NeurotomyError, match=r"grad_rollout cannot recompute the attention of 'layers.0.blocks.0.attn' "
                                             r"\(WindowAttention\): it adds a relative position bias.*use gradcam"):
        gradient_rollout(timm_swin, torch.randn(1, 3, 64, 64), torch.tensor([0]))


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_timm_swin_v2_per_head_parameters_are_still_refused(qkv_bias):
    # with or without q/v biases its logit scale holds per-head values, and its forward reshapes to the
    # input width: no slicing makes it run with fewer heads
    parameter = "logit_scale"
    timm = pytest.importorskip("timm")
    model = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=64, window_size=4,
                              num_classes=4, depths=(1, 1, 1, 1), embed_dim=16, num_heads=(2, 2, 2, 2),
                              qkv_bias=qkv_bias)
    site = attention_sites(model)[0]
    assert head_refusal(site) == f"its parameter {parameter} holds per-head values"
    with pytest.raises(PruningError, match=rf"cannot remove heads of {site.name}: its parameter {parameter} holds "
                                           "per-head values; keep its heads"):
        remove_heads(model, site.name, [0])


# --------------------------------------------------------------------------- torchvision MaxViT

@pytest.fixture(scope="module")
def maxvit():
    torch.manual_seed(0)
    return load_model("torchvision:maxvit_t", in_channels=3, num_classes=10, input_size=224).eval()


@pytest.fixture(scope="module")
def maxvit_input():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def test_maxvit_attention_is_a_site_with_its_own_names(maxvit):
    sites = attention_sites(maxvit)
    expected = [n for n, m in maxvit.named_modules() if type(m).__name__ == "RelativePositionalMultiHeadAttention"]
    assert [s.name for s in sites] == expected and len(sites) == 22
    first = sites[0]
    assert (first.kind, first.qkv_name, first.proj_name, first.heads_attribute) == (
        "qkv", f"{first.name}.to_qkv", f"{first.name}.merge", "n_heads")
    assert first.qkv is first.module.to_qkv and first.proj is first.module.merge
    assert [s.num_heads for s in sites][::2] == [2, 2, 4, 4, 8, 8, 8, 8, 8, 16, 16]  # maxvit_t: widths / 32
    assert all(s.head_dim == 32 and head_refusal(s) is None for s in sites)


@pytest.mark.parametrize("index,heads", [(0, [0]), (9, [2, 5, 7])])
def test_maxvit_heads_equal_their_context_zeroed(maxvit, maxvit_input, index, heads):
    layer = attention_sites(maxvit)[index].name
    pruned = check_equivalent(maxvit, layer, heads, maxvit_input)
    attn = pruned.get_submodule(layer)
    assert type(attn).__name__ == "HeadwiseRelativePositionalMultiHeadAttention"
    assert attn.n_heads == _site(maxvit, layer).num_heads - len(heads) and attn.head_dim == 32


# --------------------------------------------------------------------------- planning, recipes

@pytest.fixture(scope="module")
def timm_swin_t():
    """timm's swin_t as users load it (``timm:NAME``): its metadata rebuilds it from a checkpoint."""
    pytest.importorskip("timm")
    torch.manual_seed(0)
    return load_model("timm:swin_tiny_patch4_window7_224", in_channels=3, num_classes=10, input_size=64)


def test_prune_transformer_lowers_timm_swin_head_counts(timm_swin_t):
    before = {s.name: s.num_heads for s in attention_sites(timm_swin_t)}
    result = prune_transformer(timm_swin_t, score_transformer(timm_swin_t, "l1", "head"), units="heads",
                               ratio=1 / 3)
    after = {s.name: s.num_heads for s in attention_sites(result.model)}
    assert after == {n: h - int(h / 3 + 1e-9) for n, h in before.items()}
    assert result.details["heads_removed"] == sum(before.values()) - sum(after.values()) > 0
    assert "refused_layers" not in result.details and 0 < result.macs_reduction < 1 / 3
    with torch.no_grad():
        assert torch.isfinite(result.model.eval()(torch.randn(1, 3, 64, 64))).all()


def test_prune_transformer_lowers_maxvit_head_counts(maxvit, maxvit_input):
    before = {s.name: s.num_heads for s in attention_sites(maxvit)}
    result = prune_transformer(maxvit, score_transformer(maxvit, "l1", "head"), units="heads", ratio=1 / 3)
    after = {s.name: s.num_heads for s in attention_sites(result.model)}
    assert after == {n: h - int(h / 3 + 1e-9) for n, h in before.items()}
    assert result.details["heads_removed"] == sum(before.values()) - sum(after.values()) > 0
    with torch.no_grad():
        assert result.model.eval()(maxvit_input).shape == (1, 10)


@pytest.mark.parametrize("fixture,shape", [("timm_swin_t", (2, 3, 64, 64)), ("maxvit", (1, 3, 224, 224))])
def test_the_recipe_rebuilds_the_pruned_model(request, fixture, shape, tmp_path):
    model = request.getfixturevalue(fixture)
    sites = attention_sites(model)
    cuts = [HeadCut(sites[0].name, [0]), HeadCut(sites[-1].name, [1, sites[-1].num_heads - 1])]
    pruned = apply_transformer_cuts(model, cuts, tuple(shape[1:]))
    loaded = load_model(save_checkpoint(pruned, tmp_path / "pruned.safetensors"))
    assert [step["op"] for step in loaded.neurotomy_meta.recipe] == ["prune_heads", "prune_heads"]
    for site in (sites[0], sites[-1]):
        assert type(loaded.get_submodule(site.name)) is type(pruned.get_submodule(site.name))
        assert _site(loaded, site.name).num_heads == _site(pruned, site.name).num_heads
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), pruned.eval()(x))


@pytest.mark.parametrize("fixture,shape", [("timm_swin", (3, 64, 64)), ("maxvit", (3, 224, 224))])
def test_predicted_params_are_the_cut_models_own(request, fixture, shape):
    """predict() counts the removed heads' bias-table entries: the predicted parameters are the
    parameters of the model actually cut (counted on it, not predicted), to the unit."""
    model = request.getfixturevalue(fixture)
    units = TransformerUnits(model, ("heads",), shape, [], 1, 1)
    planner = TransformerPlanner(units, score_transformer(model, "l1", "head"), None)
    cuts = planner.plan(0.5, "uniform")
    pruned = apply_transformer_cuts(model, cuts, shape)
    macs, params = planner.predict(cuts)
    tables = {s.name: s.module.relative_position_bias_table.shape[0] for s in attention_sites(model)}
    removed_table = sum(len(c.idxs) * tables[c.layer] for c in cuts)
    assert removed_table > 0 and len(cuts) == len(tables)  # every layer loses heads, and their table columns
    assert params == sum(p.numel() for p in pruned.parameters())
    assert params < sum(p.numel() for p in model.parameters()) - removed_table  # qkv/proj went too
    # the predicted MACs too, measured by the table and by FlopCounterMode alone (MaxViT's ModuleLists,
    # iterated and never called, once made the table count their layers twice)
    assert macs == layer_table(pruned, shape).total_macs == flop_counter_macs(pruned, shape)


# --------------------------------------------------------------------------- what stays refused

class PerHeadScale(nn.Module):
    """A qkv/proj attention with a per-head output scale, which no head cut knows to slice."""

    def __init__(self, dim=8, num_heads=2):
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, num_heads))  # this one is handled
        self.head_scale = nn.Parameter(torch.ones(num_heads))

    def forward(self, x):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        out = (q @ k.transpose(-2, -1)).softmax(-1) @ v * self.head_scale[:, None, None]
        return self.proj(out.transpose(1, 2).flatten(2))


def test_an_unknown_per_head_parameter_is_refused_by_name():
    model = nn.Sequential(PerHeadScale())
    site = attention_sites(model)[0]
    assert head_refusal(site) == "its parameter head_scale holds per-head values"
    with pytest.raises(PruningError, match="cannot remove heads of 0: its parameter head_scale holds per-head "
                                           r"values; keep its heads \(ignored_layers / --ignore 0\)"):
        remove_heads(model, "0", [1])
    assert model[0].qkv.out_features == 24 and model[0].num_heads == 2  # refused before any change
    with pytest.raises(PruningError, match=r"no scores for the heads of this model \(.*: 0 \(its parameter "
                                           r"head_scale holds per-head values\)"):
        prune_transformer(model, score_transformer(model, "l1", "head"), units="heads", ratio=0.5,
                          ignored_layers=[], input_shape=(4, 8))


# --------------------------------------------------------------------------- scores and explanations on MaxViT

def test_maxvit_head_scores_and_refusals(maxvit):
    from neurotomy.explain.rollout import attention_rollout

    scores = score_transformer(maxvit, "l1", "head")
    site = attention_sites(maxvit)[0]
    w_in, w_out = site.module.to_qkv.weight.detach(), site.module.merge.weight.detach()
    by_hand = [float(w_in.view(3, site.num_heads, site.head_dim, -1)[:, h].abs().sum()
                     + w_out.view(-1, site.num_heads, site.head_dim)[:, h].abs().sum()) for h in range(site.num_heads)]
    assert torch.allclose(scores[site.name], torch.tensor(by_hand, dtype=torch.float64), rtol=1e-5)
    data = torch.utils.data.TensorDataset(torch.randn(1, 3, 224, 224), torch.tensor([3]))
    # Taylor's head gate sits on merge's input (MaxViT calls it as a module): against x·∂L/∂x summed per head
    taylor = score_transformer(maxvit, "taylor", "head", data, max_images=1, batch_size=1)
    seen = {}
    handle = site.proj.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].retain_grad() or args[0]))
    try:
        torch.nn.functional.cross_entropy(maxvit(data.tensors[0]), data.tensors[1], reduction="sum").backward()
    finally:
        handle.remove()
        maxvit.zero_grad(set_to_none=True)
    x = seen["x"]
    naive = (x * x.grad).detach().double().unflatten(-1, (site.num_heads, -1)).movedim(-2, 0).flatten(1).sum(1).abs()
    assert taylor[site.name].shape == (site.num_heads,) and torch.allclose(taylor[site.name], naive, rtol=1e-4)
    with pytest.raises(ModelError, match="criterion 'attention_entropy' cannot score its heads; use l1, l2, taylor"):
        score_transformer(maxvit, "attention_entropy", "head", data, max_images=1, batch_size=1)
    with pytest.raises(NeurotomyError, match="rollout cannot recompute the attention of .* relative position bias"):
        attention_rollout(maxvit, torch.randn(1, 3, 224, 224), torch.tensor([0]))


# --------------------------------------------------------------------------- a user's subclass of MaxViT's attention

class TaggedAttention(RelativePositionalMultiHeadAttention):
    """A user's subclass that keeps torchvision's forward (and adds a method of its own)."""

    def tag(self):
        return "mine"


class OwnForwardAttention(RelativePositionalMultiHeadAttention):
    """A user's subclass with a forward of its own: nothing says it reads the heads' width from head_dim."""

    def forward(self, x):
        return super().forward(x)


def _windows(cls):
    torch.manual_seed(0)  # 4 heads of 16 channels over 4×4-position windows; input (batch, windows, 16, 64)
    return nn.Sequential(cls(64, 16, 16)).eval()


def test_a_subclass_keeping_torchvisions_forward_gets_the_headwise_one():
    model = _windows(TaggedAttention)
    pruned = check_equivalent(model, "0", [1, 2], torch.randn(2, 3, 16, 64))
    attn = pruned[0]
    assert isinstance(attn, TaggedAttention) and isinstance(attn, HeadwiseRelativePositionalMultiHeadAttention)
    assert attn.tag() == "mine" and attn.n_heads == 2 and attn.state_dict().keys() == model[0].state_dict().keys()
    again = copy.deepcopy(model)
    remove_heads(again, "0", [0])  # a second module of that class gets the same class (as a recipe replay does)
    assert type(again[0]) is type(attn) and type(model[0]) is TaggedAttention  # the original is untouched
    result = prune_transformer(model, score_transformer(model, "l1", "head"), units="heads", ratio=0.5,
                               ignored_layers=[], input_shape=(3, 16, 64))
    assert result.model[0].n_heads == 2 and "refused_layers" not in result.details


def test_a_subclass_with_its_own_forward_is_refused_by_name():
    model = _windows(OwnForwardAttention)
    reason = ("its class OwnForwardAttention overrides the forward of torchvision's MaxViT attention, which may take "
              "the heads' width from the model width, so its heads cannot be cut; cut its MLP neurons, or leave "
              "forward to torchvision's class")
    assert head_refusal(attention_sites(model)[0]) == reason
    with pytest.raises(PruningError) as refused:
        remove_heads(model, "0", [1])
    assert str(refused.value) == f"cannot remove heads of 0: {reason}; keep its heads (ignored_layers / --ignore 0)"
    assert model[0].to_qkv.out_features == 192 and model[0].n_heads == 4 and type(model[0]) is OwnForwardAttention
    with pytest.raises(PruningError) as planned:
        prune_transformer(model, score_transformer(model, "l1", "head"), units="heads", ratio=0.5,
                          ignored_layers=[], input_shape=(3, 16, 64))
    assert f"(1 layer(s) keep all their heads: 0 ({reason}))" in str(planned.value)
    assert "\n" not in str(planned.value) and "torch-pruning cannot" not in str(planned.value)
