import torch
from torch import nn

from neurotomy.checkpoint import ModelMeta
from neurotomy.data import load_dataset
from neurotomy.jobs import schedules
from neurotomy.jobs.schedules import prune_iteratively, soft_filter_pruning
from neurotomy.models import build_model
from neurotomy.scores import get_criterion
from neurotomy.train import TrainConfig, evaluate

ARGS = {"in_channels": 1, "num_classes": 10, "input_size": 8}


def test_iterative_reaches_target_of_original_macs_rescoring_each_step(monkeypatch):
    model = build_model("resnet20", **ARGS).eval()
    model.neurotomy_meta = ModelMeta("resnet20", ARGS)
    data = load_dataset("digits")
    scored = []  # per step: the model as it was scored, its L1 norms by hand, and the scores

    def spy(name):
        criterion = get_criterion(name)

        def score(current, *args, **kw):
            l1 = {n: m.weight.detach().abs().sum((1, 2, 3)).double() for n, m in current.named_modules()
                  if isinstance(m, nn.Conv2d)}
            scored.append((l1, criterion(current, *args, **kw)))
            return scored[-1][1]
        return score
    monkeypatch.setattr(schedules, "get_criterion", spy)
    result = prune_iteratively(model, "l1", data, target_macs=0.6, steps=3, quiet=True)
    assert abs(result.macs_reduction - 0.6) <= 0.015
    # each step scores the model as the previous cuts left it: its own filters, their own norms
    assert len(scored) == 3
    for l1, scores in scored:
        assert set(scores) == set(l1)
        for layer, norms in l1.items():
            torch.testing.assert_close(scores[layer], norms)
    # so the second step's scores differ from the first's: fewer filters, and some are new values —
    # a kept filter whose input channels were cut has a smaller norm, which reusing (a subset of)
    # the first scores could not give
    first, second = scored[0][1], scored[1][1]
    assert sum(len(v) for v in second.values()) < sum(len(v) for v in first.values())

    def rescored(layer):
        return not torch.isclose(second[layer][:, None], first[layer][None, :]).any(1).all()
    assert any(rescored(layer) for layer in first)
    # three rounds of cuts in the recipe
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


def test_fine_tunes_between_steps_use_the_given_lr_and_skip_the_last_step(monkeypatch):
    model = build_model("resnet20", **ARGS).eval()
    model.neurotomy_meta = ModelMeta("resnet20", ARGS)
    seen = []
    monkeypatch.setattr(schedules, "finetune", lambda m, data, epochs, **kw: seen.append((epochs, kw["lr"])))
    prune_iteratively(model, "l1", load_dataset("digits"), target_macs=0.5, steps=3, finetune_epochs=2,
                      finetune_lr=0.003, quiet=True)
    assert seen == [(2, 0.003), (2, 0.003)]  # after steps 1 and 2, not after the last
