import torch
from torch import nn

from neurotomy.checkpoint import ModelMeta
from neurotomy.data import load_dataset
from neurotomy.models import build_model
from neurotomy.jobs.schedules import prune_iteratively, soft_filter_pruning
from neurotomy.train import TrainConfig, evaluate

ARGS = {"in_channels": 1, "num_classes": 10, "input_size": 8}


def test_iterative_reaches_target_of_original_macs():
    model = build_model("resnet20", **ARGS).eval()
    model.neurotomy_meta = ModelMeta("resnet20", ARGS)
    data = load_dataset("digits")
    result = prune_iteratively(model, "l1", data, target_macs=0.6, steps=3, quiet=True)
    assert abs(result.macs_reduction - 0.6) <= 0.015
    # three rounds of cuts in the recipe, each re-scored on the then-current model
    assert len({step["layer"] for step in result.model.neurotomy_meta.recipe}) >= 3
    assert len(result.model.neurotomy_meta.recipe) > len(result.cuts)


def test_soft_filter_pruning_zeroes_then_removes():
    torch.manual_seed(0)
    model = build_model("vgg11_bn", **ARGS)
    data, test = load_dataset("digits"), load_dataset("digits", split="test")
    config = TrainConfig(epochs=4, lr=0.05, batch_size=32, quiet=True)
    result = soft_filter_pruning(model, data, 0.5, config, input_shape=(1, 8, 8))
    # at the end of the last epoch the weakest half was zeroed, so removal changes nothing
    x = test.images[:64]
    with torch.no_grad():
        torch.testing.assert_close(result.model.eval()(x), model.eval()(x), atol=1e-5, rtol=1e-5)
    convs = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs][:2] == [8, 16]
    assert evaluate(result.model, test, quiet=True)["accuracy"] > 0.8
