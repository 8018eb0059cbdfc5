"""The model matrix (issue 20): models from torchvision, timm and a user's file, each counted,
scored, pruned to −50 % MACs, saved, reloaded and explained — the small list here, the full one in
``benchmarks/model_matrix.py``.
"""

import json

import pytest
import torch

from neurotomy import load_model, save_checkpoint
from neurotomy.cli import main
from neurotomy.explain import attribute
from neurotomy.models.summary import flop_counter_macs, layer_table
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters

SIZE = 32
MATRIX = ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "torchvision:regnet_x_400mf",
          "torchvision:shufflenet_v2_x0_5", "torchvision:mnasnet0_5", "timm:resnet18", "timm:convnext_atto"]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("spec", MATRIX)
def test_count_prune_save_reload_explain(spec, tmp_path):
    if spec.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = load_model(spec, in_channels=3, num_classes=10, input_size=SIZE)
    shape = (3, SIZE, SIZE)
    table = layer_table(model, shape)
    assert table.total_macs == pytest.approx(flop_counter_macs(model, shape), rel=0.01)
    assert table.total_params == sum(p.numel() for p in model.parameters())

    result = prune_filters(model, get_criterion("l1")(model), target_macs=0.5)
    assert abs(result.macs_reduction - 0.5) <= 0.02
    assert result.macs_after == layer_table(result.model, shape).total_macs
    for name, module in result.model.named_modules():  # grouped convolutions lose whole positions per group
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1:
            assert module.in_channels % module.groups == 0 == module.out_channels % module.groups, name
    if "shufflenet" in spec:  # channels through a channel shuffle stay, and the layers are named
        assert "stage2.0.branch1.2" in result.details["refused_layers"]
        assert not set(result.details["refused_layers"]) & set(result.channels)

    reloaded = load_model(save_checkpoint(result.model, tmp_path / "pruned"))
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), result.model.eval()(x), atol=1e-5)
    for method in ("gradcam", "gradient", "pathway"):
        maps = attribute(reloaded, x, method=method)
        assert maps.shape == (2, SIZE, SIZE) and torch.isfinite(maps).all()


def test_counts_attention_and_linear_on_feature_maps():
    from torch import nn

    encoder = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    tokens, dim = 10, 16
    # projections in (3·d²) and out (d²) per token, two matmuls of tokens² · d, the MLP 2 · d · 32 per token
    expected = tokens * (3 * dim * dim + dim * dim) + 2 * tokens * tokens * dim + tokens * 2 * dim * 32
    assert layer_table(encoder, (tokens, dim)).total_macs == expected
    assert layer_table(encoder, (tokens, dim)).total_params == sum(p.numel() for p in encoder.parameters())
    pointwise = nn.Sequential(nn.Flatten(2), nn.Linear(4, 8))  # a Linear applied at each of 3 positions
    assert layer_table(pointwise, (3, 2, 2)).total_macs == 3 * 4 * 8


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_user_file_model_through_the_cli(user_net, tmp_path, capsys):
    net = f"{user_net}:make"
    shape = ["--input-size", "8"]
    assert main(["info", net, *shape, "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    model = load_model(net, input_size=8)
    assert table["total_macs"] == flop_counter_macs(model, (1, 8, 8))

    assert main(["score", net, *shape, "--criterion", "l1", "--out", str(tmp_path / "s.npz"), "--quiet"]) == 0
    capsys.readouterr()
    pruned_path = tmp_path / "pruned.safetensors"
    assert main(["prune", net, *shape, "--data", "digits", "--target-macs", "0.5", "--max-images", "64",
                 "--recalibrate-images", "64", "--no-latency", "--out", str(pruned_path), "--json", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    measured = 1 - record["macs_after"] / record["macs_before"]
    assert abs(measured - 0.5) <= 0.02 and record["macs_before"] == table["total_macs"]
    pruned = load_model(pruned_path)
    assert layer_table(pruned, (1, 8, 8)).total_macs == pytest.approx((1 - measured) * table["total_macs"], abs=1)
    assert main(["evaluate", str(pruned_path), "--data", "digits", "--json", "--quiet"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == pytest.approx(record["comparison"]["pruned"]["accuracy"])
    assert main(["explain", str(pruned_path), "--data", "digits", "--method", "gradcam", "gradient", "pathway",
                 "--n", "4", "--out", str(tmp_path / "maps.png"), "--quiet"]) == 0
    assert (tmp_path / "maps.png").stat().st_size > 0
