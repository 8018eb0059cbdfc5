"""Refusal lines say each refusal's own cause: torch-pruning's where it cannot follow the channels,
the module's form where a head cut cannot run (torchvision's Swin, a per-head parameter such as timm
Swin V2's logit scale), neurotomy's rule where a filter cut would reach into heads — never
"torch-pruning cannot prune them" for all of them."""

import warnings

import pytest
import torch
from torch import nn

from neurotomy.errors import NeurotomyWarning
from neurotomy.models import build_model
from neurotomy.models.transformer import attention_sites
from neurotomy.scores import score_transformer
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.filters import prune_filters
from neurotomy.surgery.planner import refusal_line
from neurotomy.surgery.transformer import prune_transformer


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: many small ops, one thread


def l1_scores(model):
    return UnitScores({n: m.weight.detach().abs().flatten(1).sum(1) for n, m in model.named_modules()
                       if isinstance(m, (nn.Linear, nn.Conv2d))}, "l1")


def only_warning(call):
    """The one NeurotomyWarning ``call`` raises, as text, and what ``call`` returns."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    lines = [str(w.message) for w in caught if issubclass(w.category, NeurotomyWarning)]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0] and "torch-pruning cannot prune them" not in lines[0]
    return lines[0], result


def test_refusal_line_groups_layers_by_reason_and_names_the_units():
    refused = {f"layers.{i}.attn": "its parameter logit_scale holds per-head values" for i in range(6)}
    refused["embedding"] = "ignored layer head writes the residual stream"
    assert refusal_line(refused, "heads") == (
        "7 layer(s) keep all their heads: layers.0.attn, layers.1.attn, layers.2.attn, layers.3.attn and 2 more "
        "(its parameter logit_scale holds per-head values); embedding (ignored layer head writes the residual stream)")
    assert refusal_line({"conv": "torch-pruning cannot map its channels (IndexError)"}) == (
        "1 layer(s) keep all their channels: conv (torch-pruning cannot map its channels (IndexError))")


def test_filter_pruning_says_heads_are_refused_by_neurotomy_not_torch_pruning():
    torch.manual_seed(0)
    model = build_model("vit_tiny", 1, 4, 8, patch=2, dim=16, depth=2, num_heads=2, mlp_hidden=24).eval()
    line, result = only_warning(lambda: prune_filters(model, l1_scores(model), ratio=0.25))
    assert line.startswith("2 layer(s) keep all their channels: "), line
    for block in (0, 1):
        assert (f"blocks.{block}.attn.qkv (its channels are the heads of blocks.{block}.attn (prune_transformer cuts "
                "whole heads))") in line
    assert set(result.details["refused_layers"]) == {"blocks.0.attn.qkv", "blocks.1.attn.qkv"} and result.cuts


class Shuffle(nn.Module):
    """conv → channel shuffle (ShuffleNet's view → transpose → view) → conv → classifier."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(1, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


def test_a_channel_shuffle_refusal_still_names_torch_pruning():
    model = Shuffle().eval()
    line, _ = only_warning(lambda: prune_filters(model, l1_scores(model), ratio=0.25, input_shape=(1, 8, 8)))
    assert line == ("1 layer(s) keep all their channels: conv1 (its channels pass through a channel shuffle "
                    "(torch-pruning cannot map it))")


def test_transformer_refusals_name_each_familys_cause():
    """timm's Swin V2: its heads refused by their logit scale, its embedding by its stages' widths, in one
    line family by family; its MLP neurons still cut."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=64, window_size=4, num_classes=4,
                              depths=(1, 1, 1, 1), embed_dim=16, num_heads=(2, 2, 2, 2)).eval()
    heads = [s.name for s in attention_sites(model)]
    scores = score_transformer(model, "l1", "neuron")
    line, result = only_warning(lambda: prune_transformer(model, scores, units="all", ratio=0.25,
                                                          input_shape=(3, 64, 64)))
    bias_mlps = [f"{name}.cpb_mlp.0" for name in heads]  # its position-bias MLPs, fed by buffers only
    assert line.startswith(f"4 layer(s) keep all their heads: {', '.join(heads)} (its parameter logit_scale holds "
                           f"per-head values). 4 layer(s) keep all their MLP neurons: {', '.join(bias_mlps)} "
                           "(torch-pruning's trace of the model does not reach its neurons). 1 layer(s) keep all their "
                           "embedding channels: embedding (the model has residual streams of several widths ("), line
    assert set(result.details["refused_layers"]) == set(heads) | set(bias_mlps) | {"embedding"}
    assert result.details["neurons_removed"] > 0 and result.details["heads_removed"] == 0
