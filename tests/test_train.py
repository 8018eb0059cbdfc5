import pytest
import torch

from neurotomy.data import load_dataset
from neurotomy.models import build_model
from neurotomy.jobs.new_model import train_new_model
from neurotomy.train import TrainConfig, classification_metrics, evaluate, fit, seed_everything

CONFIG = dict(epochs=15, lr=0.1, batch_size=32, quiet=True)


def test_digits_reach_90_percent():
    model = train_new_model("lenet5", "digits", None, TrainConfig(**CONFIG))
    metrics = evaluate(model, load_dataset("digits", split="test"), quiet=True)
    assert metrics["accuracy"] >= 0.90
    assert model.neurotomy_meta.metrics["test"]["accuracy"] == metrics["accuracy"]


def test_same_seed_same_weights_other_seed_differs():
    a = train_new_model("lenet5", "digits", None, TrainConfig(**{**CONFIG, "epochs": 2, "seed": 5}))
    b = train_new_model("lenet5", "digits", None, TrainConfig(**{**CONFIG, "epochs": 2, "seed": 5}))
    c = train_new_model("lenet5", "digits", None, TrainConfig(**{**CONFIG, "epochs": 2, "seed": 6}))
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))


def test_classification_metrics_by_hand():
    targets = torch.tensor([0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0])
    m = classification_metrics(predicted, targets, 3)
    assert m["accuracy"] == 3 / 5
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class_precision"] == [0.5, round(2 / 3, 6), 0.0]
    assert m["per_class_recall"] == [0.5, 1.0, 0.0]


@pytest.mark.parametrize("images", [8, 256, 512, 640])
def test_one_cycle_survives_very_short_runs(images):
    """1 to 5 optimiser steps used to divide by a zero-length OneCycle phase."""
    seed_everything(0)
    model = build_model("lenet5", 1, 10, 8)
    history = fit(model, load_dataset("digits"), TrainConfig(epochs=1, batch_size=128, max_images=images, quiet=True))
    assert len(history) == 1 and history[0]["loss"] > 0
