"""Structural pruning of transformer heads, MLP neurons and embedding channels.

The correctness check is equivalence: a model with heads/neurons removed must compute what the
unpruned model computes with those heads/neurons zero-gated (masked by a hook, independently of
the cut), for neurotomy's vit_tiny, timm's DeiT and torchvision's ViT alike.
"""

import copy
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from neurotomy.checkpoint import save_checkpoint
from neurotomy.errors import PruningError
from neurotomy.loading import load_model
from neurotomy.models import build_model
from neurotomy.models.summary import layer_table
from neurotomy.models.transformer import attention_sites, mlp_sites
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.filters import prune_filters
from neurotomy.surgery.attention import MultiheadSelfAttention
from neurotomy.surgery.transformer import (EMBEDDING, TransformerPlanner, TransformerUnits, apply_transformer_cuts,
                                           family_of, prune_transformer, torch_pruning_scores)

TINY = dict(patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24)


def tiny_vit(seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model("vit_tiny", 1, 4, 8, **{**TINY, **overrides}).eval()


def deit():
    torch.manual_seed(0)
    return load_model("timm:deit_tiny_patch16_224", in_channels=3, num_classes=4, input_size=32)


def tv_vit():
    torch.manual_seed(0)
    return load_model("torchvision:vit_b_16", in_channels=3, num_classes=4, input_size=32)


def tv_small():
    """torchvision's VisionTransformer class (nn.MultiheadAttention, MLPBlock, ``hidden_dim``) at a
    size the fast tests afford; vit_b_16 itself runs in the slow ones."""
    from torchvision.models.vision_transformer import VisionTransformer
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                             num_classes=4).eval()


MODELS = {"vit_tiny": (tiny_vit, (1, 8, 8)), "deit": (deit, (3, 32, 32)), "tv_small": (tv_small, (3, 32, 32)),
          "vit_b_16": (tv_vit, (3, 32, 32))}
SLOW = pytest.mark.slow  # torchvision's ViT-B/16: ~86M parameters, tens of seconds on a busy machine


def weight_l1_scores(model):
    """L1 of each head's q, k, v rows and proj columns, and of each neuron's fc1 row (computed here,
    by hand, from the weights as the model stores them)."""
    scores = {}
    for site in attention_sites(model):
        w_in, w_out = ((site.module.in_proj_weight, site.module.out_proj.weight) if site.kind == "mha"
                       else (site.module.qkv.weight, site.module.proj.weight))
        width = site.num_heads * site.head_dim
        per_channel = w_in.detach().abs().sum(1).view(3, width).sum(0) + w_out.detach().abs().sum(0)
        scores[site.name] = per_channel.view(site.num_heads, site.head_dim).sum(1)
    for mlp in mlp_sites(model):
        scores[mlp.fc1_name] = model.get_submodule(mlp.fc1_name).weight.detach().abs().sum(1)
    return UnitScores(scores, "l1")


def embedding_l1(model):
    first = attention_sites(model)[0]
    return UnitScores({EMBEDDING: first.proj.weight.detach().abs().sum(1)}, "l1")


def masked(model, result):
    """A copy of ``model`` whose removed heads and neurons are zero-gated by hooks: a head's context
    (ours: at ``head_gate``; others: the columns ``proj`` reads) and a neuron's activation."""
    gated = copy.deepcopy(model).eval()
    sites = {s.name: s for s in attention_sites(gated)}
    mlps = {m.fc1_name: m for m in mlp_sites(gated)}
    for cut in result.cuts:
        heads = list(cut.idxs)
        if family_of(cut) == "heads":
            site = sites[cut.layer]
            if hasattr(site.module, "head_gate"):
                def gate(module, inputs, output, heads=heads):
                    output = output.clone()
                    output[:, heads] = 0
                    return output
                site.module.head_gate.register_forward_hook(gate)
            else:
                columns = [h * site.head_dim + j for h in heads for j in range(site.head_dim)]
                with torch.no_grad():
                    site.proj.weight[:, columns] = 0
        elif family_of(cut) == "neurons":
            def silence(module, inputs, output, idxs=heads):
                output = output.clone()
                output[..., idxs] = 0
                return output
            gated.get_submodule(mlps[cut.layer].act_name).register_forward_hook(silence)
    return gated


@pytest.mark.parametrize("name,units,scope", [
    *[(name, units, scope) for name in ("vit_tiny", "deit", "tv_small")
      for units, scope in [("heads", "uniform"), ("neurons", "global"), (("heads", "neurons"), "global")]],
    pytest.param("vit_b_16", ("heads", "neurons"), "global", marks=SLOW)])
def test_pruned_equals_masked(name, units, scope):
    build, shape = MODELS[name]
    model = build()
    result = prune_transformer(model, weight_l1_scores(model), units=units, ratio=0.5, scope=scope, input_shape=shape)
    assert result.cuts and result.macs_after < result.macs_before
    x = torch.randn(3, *shape)
    with torch.no_grad():
        expected = masked(model, result)(x)
        got = result.model.eval()(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for site in attention_sites(result.model):  # num_heads follows the cut everywhere
        if site.kind == "mha":  # neurons only: torchvision's attention stays as it was
            assert "heads" not in units and site.num_heads == 4
            continue
        assert site.module.qkv.out_features == 3 * site.num_heads * site.head_dim
        if hasattr(site.module, "attn_dim"):
            assert site.module.attn_dim == site.num_heads * site.head_dim


def test_torchvision_attention_unpacked_exactly():
    mha = nn.MultiheadAttention(16, 4, batch_first=False).eval()
    x = torch.randn(5, 2, 16)
    mask = torch.rand(5, 5) > 0.7
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, -1] = True
    unpacked = MultiheadSelfAttention.from_mha(mha).eval()
    for kw in ({}, {"attn_mask": mask}, {"key_padding_mask": padding}):
        ref, ref_w = mha(x, x, x, **kw)
        out, w = unpacked(x, x, x, **kw)
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)


def test_embedding_cut_matches_hand_slicing():
    """Removing embedding channels = slicing every tensor that reads or writes the residual stream,
    done here by hand, one tensor at a time."""
    model = tiny_vit(seed=3)
    result = prune_transformer(model, embedding_l1(model), units="embedding", ratio=0.25)
    (cut,) = result.cuts
    keep = torch.tensor([c for c in range(16) if c not in set(cut.idxs)])
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.patch_embed.weight = nn.Parameter(ref.patch_embed.weight[keep])
        ref.patch_embed.bias = nn.Parameter(ref.patch_embed.bias[keep])
        ref.cls_token = nn.Parameter(ref.cls_token[..., keep])
        ref.pos_embed = nn.Parameter(ref.pos_embed[..., keep])
        for name, module in ref.named_modules():
            if isinstance(module, nn.LayerNorm):
                module.weight, module.bias = nn.Parameter(module.weight[keep]), nn.Parameter(module.bias[keep])
                module.normalized_shape = (len(keep),)
            elif name.endswith(("qkv", "fc1")) or name == "head":
                module.weight = nn.Parameter(module.weight[:, keep])
            elif name.endswith(("proj", "fc2")):
                module.weight, module.bias = nn.Parameter(module.weight[keep]), nn.Parameter(module.bias[keep])
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), ref(x), atol=1e-5, rtol=1e-5)
    assert result.details["embedding_removed"] == 4 and result.channels[EMBEDDING] == (16, 12)


def test_predicted_macs_are_measured_macs():
    """For vit_tiny every cost a cut changes is a linear or an attention matmul: the prediction is exact."""
    model = tiny_vit()
    units = TransformerUnits(model, ("heads", "neurons", "embedding"), (1, 8, 8), ["head"], 1, 1)
    planner = TransformerPlanner(units, UnitScores({**weight_l1_scores(model), **embedding_l1(model)}), None)
    for ratio in (0.2, 0.5):
        cuts = planner.plan(ratio, "global")
        pruned = apply_transformer_cuts(model, cuts, (1, 8, 8))
        assert planner.predict(cuts)[0] == layer_table(pruned, (1, 8, 8)).total_macs


@pytest.mark.parametrize("which", ["macs", "params"])
def test_target_reduction_met(which):
    torch.manual_seed(0)
    model = build_model("vit_tiny", 1, 10, 28, depth=3).eval()
    scores = [weight_l1_scores(model), embedding_l1(model)]
    kw = {"target_macs": 0.5} if which == "macs" else {"target_params": 0.5}
    result = prune_transformer(model, scores, units="all", **kw)
    reduction = result.macs_reduction if which == "macs" else result.params_reduction
    assert abs(reduction - 0.5) <= 0.01
    assert result.macs_before == layer_table(model, (1, 28, 28)).total_macs  # attention matmuls counted
    assert result.details["heads_removed"] > 0 and result.details["neurons_removed"] > 0


@pytest.mark.parametrize("name", ["vit_tiny", "deit", pytest.param("vit_b_16", marks=SLOW)])
def test_save_load_rebuilds_the_pruned_model(name, tmp_path):
    build, shape = MODELS[name]
    model = build()
    ratio = 0.5 if name != "vit_b_16" else 0.75  # a smaller checkpoint to write
    result = prune_transformer(model, [weight_l1_scores(model), embedding_l1(model)], units="all", ratio=ratio)
    path = save_checkpoint(result.model, tmp_path / "pruned.safetensors")
    loaded = load_model(path)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))
    ops = [step["op"] for step in loaded.neurotomy_meta.recipe]
    assert {"prune_heads", "prune_out_channels", "prune_embedding"} <= set(ops)
    assert ("unpack_attention" in ops) == (name == "vit_b_16")


def test_ignored_and_min_heads_respected():
    model = tiny_vit(num_heads=4)
    result = prune_transformer(model, weight_l1_scores(model), units="heads", ratio=0.9, scope="uniform",
                               ignored_layers=["head", "blocks.1.attn"], min_heads=2)
    assert [c.layer for c in result.cuts] == ["blocks.0.attn"]
    assert result.model.blocks[0].attn.num_heads == 2 and result.model.blocks[1].attn.num_heads == 4


def test_bad_requests_are_one_line_errors():
    model = tiny_vit()
    scores = weight_l1_scores(model)
    with pytest.raises(PruningError, match="unknown units"):
        prune_transformer(model, scores, units="filters", ratio=0.5)
    with pytest.raises(PruningError, match="no scores for the embedding"):
        prune_transformer(model, scores, units="all", ratio=0.5)
    with pytest.raises(PruningError, match="shape"):
        prune_transformer(model, UnitScores({"blocks.0.attn": torch.ones(3)}), units="heads", ratio=0.5)
    with pytest.raises(PruningError, match="exactly one"):
        prune_transformer(model, scores, units="heads", ratio=0.5, target_macs=0.5)


def test_torch_pruning_l2_is_its_group_importance():
    """tp-l2 by hand: a head's channel c scores (‖proj[:, c]‖² + Σ_qkv ‖row‖²) / 2, divided by the
    mean over channels, averaged per head; a neuron (‖fc1 row‖² + ‖fc2 column‖²) / 2 over the mean."""
    model = tiny_vit(seed=1)
    heads, neurons, embedding = torch_pruning_scores(model, "l2")
    attn = model.blocks[0].attn
    per = (attn.proj.weight.pow(2).sum(0) + attn.qkv.weight.pow(2).sum(1).view(3, 16).sum(0)).detach() / 2
    torch.testing.assert_close(heads["blocks.0.attn"], (per / per.mean()).view(2, 8).mean(1).double())
    fc1, fc2 = model.blocks[1].mlp.fc1, model.blocks[1].mlp.fc2
    per = (fc1.weight.pow(2).sum(1) + fc2.weight.pow(2).sum(0)).detach() / 2
    torch.testing.assert_close(neurons["blocks.1.mlp.fc1"], (per / per.mean()).double())
    assert embedding[EMBEDDING].shape == (16,) and heads.info["unit"] == "head"


def test_torch_pruning_head_group_is_its_own_on_timm():
    """On timm's attention (unbind) torch-pruning builds the head group itself: same importance."""
    import torch_pruning as tp
    from neurotomy.surgery.graph import dependency_graph
    model = deit()
    heads = torch_pruning_scores(model, "l2", units=["head"])[0]
    graph = dependency_graph(model, torch.zeros(1, 3, 32, 32))
    proj = model.blocks[2].attn.proj
    group = graph.get_pruning_group(proj, graph.get_pruner_of_module(proj).prune_in_channels, list(range(192)))
    own = tp.importance.GroupMagnitudeImportance(p=2)(group).view(3, -1).mean(1).double()
    torch.testing.assert_close(heads["blocks.2.attn"], own)


def test_torch_pruning_taylor_needs_and_uses_gradients():
    model = tiny_vit()
    with pytest.raises(PruningError, match="gradients"):
        torch_pruning_scores(model, "taylor")
    batches = [(torch.randn(4, 1, 8, 8), torch.randint(0, 4, (4,)))]
    heads, neurons, _ = torch_pruning_scores(model, "taylor", batches=batches)
    assert all(torch.isfinite(s).all() and (s >= 0).all() for s in list(heads.values()) + list(neurons.values()))
    assert model.blocks[0].attn.qkv.weight.grad is None  # the caller's model is left alone
    result = prune_transformer(model, [heads, neurons], units="neurons", ratio=0.5)
    assert result.details["neurons_removed"] == 24


def test_filter_pruning_refuses_attention_heads():
    """The filter path no longer cuts into heads (which used to leave timm's reshape at the old
    width); it names the attention and keeps those channels, and the rest still prunes."""
    model = deit()
    scores = UnitScores({n: m.weight.detach().abs().flatten(1).sum(1) for n, m in model.named_modules()
                         if isinstance(m, (nn.Linear, nn.Conv2d))}, "l1")
    with pytest.warns(Warning, match="heads of blocks"):
        result = prune_filters(model, scores, ratio=0.3)
    assert "blocks.0.attn.qkv" in result.details["refused_layers"]
    assert all(".attn." not in c.layer for c in result.cuts) and result.cuts
    result.model(torch.zeros(1, 3, 32, 32))


class StaleWidth(nn.Module):
    """Reads its width from an attribute, as torchvision's ViT does in ``_process_input``."""

    def __init__(self):
        super().__init__()
        self.width = 8
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(x.reshape(x.shape[0], self.width, -1).mean(-1))


def test_refused_prune_names_the_cut_that_breaks():
    model = StaleWidth().eval()
    scores = UnitScores({"conv1": torch.arange(8.0), "conv2": torch.arange(8.0)}, "l1")
    with pytest.raises(PruningError, match=r"of layer conv2: layer fc \(Linear\) fails.*keep conv2 whole"):
        prune_filters(model, scores, ratio=0.5, input_shape=(1, 8, 8))


@pytest.mark.slow
def test_swin_plans_and_cuts(tmp_path):
    """torchvision's swin_t at 64 px, random init, in a fresh process: filter pruning lands on −10 % MACs
    and MLP neuron pruning (20 %) cuts more than 5 % of the MACs, both planned and cut without error.
    How long and how much memory this takes (issue #21: ≤ 60 s, ≤ 2 GB) is measured, on a quiet machine,
    by benchmarks/transformer_scale.py (`make bench-transformer-scale`), whose child script this runs."""
    from tests.benchmark_scripts import load_benchmark

    bench = load_benchmark("transformer_scale")
    script = bench.child_script("torchvision:swin_t", 64, ["filters", "neurons"])
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    cuts = {e["cut"]: e for e in bench.read_events(run.stdout) if e["event"] == "cut"}
    assert sorted(cuts) == ["filters", "neurons"], run.stdout[-2000:]
    assert all(c["ok"] and c["error"] is None for c in cuts.values()), json.dumps(cuts)
    assert abs(cuts["filters"]["macs_reduction"] - 0.1) <= 0.02 and cuts["neurons"]["macs_reduction"] > 0.05, cuts


@pytest.mark.parametrize("name", ["vit_tiny", "deit"])
def test_prunes_by_the_transformer_criteria(name):
    """The scores neurotomy's transformer criteria make (one UnitScores per unit kind) drive the cut."""
    from neurotomy.scores import score_transformer
    build, shape = MODELS[name]
    model = build()
    scores = [score_transformer(model, "l2", unit) for unit in ("head", "neuron", "embedding")]
    result = prune_transformer(model, scores, units="all", ratio=0.3, scope="global", input_shape=shape)
    removed = result.details
    assert removed["heads_removed"] > 0 and removed["neurons_removed"] > 0 and removed["embedding_removed"] > 0
    assert result.model.eval()(torch.zeros(2, *shape)).shape == (2, 4)


def test_the_pruned_copy_keeps_each_modules_training_mode():
    # a caller fine-tuning with one part frozen in eval (a LayerNorm, the dropouts) gets the copy in the
    # same state, module by module — not the whole model switched to one mode
    model = tv_small().train()
    frozen = model.encoder.layers.encoder_layer_0.ln_1.eval()
    model.encoder.dropout.eval()
    result = prune_transformer(model, weight_l1_scores(model), units=("heads", "neurons"), ratio=0.5,
                               input_shape=(3, 32, 32))
    modes = {name: m.training for name, m in model.named_modules()}
    pruned = dict(result.model.named_modules())
    assert not pruned["encoder.layers.encoder_layer_0.ln_1"].training and not pruned["encoder.dropout"].training
    assert all(m.training == modes.get(name, True) for name, m in pruned.items())
    assert not frozen.training and model.training  # the original untouched


def test_a_pruned_copy_keeps_tied_weights_tied_and_owns_them():
    # the copy is made sharing the model's tensors and then clones what the cuts left shared: one
    # clone per tensor, so two layers tied in the model are tied (to a new tensor) in the copy
    model = tiny_vit()
    model.blocks[1].mlp.fc2.weight = model.blocks[0].mlp.fc2.weight
    model.blocks[1].mlp.fc2.bias = model.blocks[0].mlp.fc2.bias
    result = prune_transformer(model, weight_l1_scores(model), units="heads", ratio=0.5, input_shape=(1, 8, 8))
    fc2 = [result.model.blocks[i].mlp.fc2.weight for i in (0, 1)]
    assert fc2[0] is fc2[1] and fc2[0] is not model.blocks[0].mlp.fc2.weight
    theirs = {t.untyped_storage().data_ptr() for t in model.parameters()}
    assert not theirs & {t.untyped_storage().data_ptr() for t in result.model.parameters()}


@pytest.mark.parametrize("units", ["neurons", "heads"])
def test_cuts_applied_directly_give_an_owning_copy(units):
    # apply_transformer_cuts without unpack steps (as a benchmark replays cuts): neurons alone need no unpacking
    model = tv_small()
    result = prune_transformer(model, weight_l1_scores(model), units=units, ratio=0.5, input_shape=(3, 32, 32))
    again = apply_transformer_cuts(model, result.cuts, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), result.model.eval()(x))
    theirs = {t.untyped_storage().data_ptr() for t in model.parameters()}
    assert not theirs & {t.untyped_storage().data_ptr() for t in again.parameters()}
