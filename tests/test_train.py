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
    assert m["per_class_precision"] == [0.5, round(2 / 3, 6), None]  # class 2 is never predicted
    assert m["per_class_recall"] == [0.5, 1.0, 0.0]


@pytest.mark.parametrize("images", [8, 256, 512, 640])
def test_one_cycle_survives_very_short_runs(images):
    """1 to 5 optimiser steps used to divide by a zero-length OneCycle phase."""
    seed_everything(0)
    model = build_model("lenet5", 1, 10, 8)
    history = fit(model, load_dataset("digits"), TrainConfig(epochs=1, batch_size=128, max_images=images, quiet=True))
    assert len(history) == 1 and history[0]["loss"] > 0


def test_diverging_training_stops_with_one_line_naming_a_lower_lr(tmp_path, capsys):
    from neurotomy.cli import main

    out = tmp_path / "m.safetensors"
    assert main(["train", "lenet5", "--data", "digits", "--epochs", "2", "--batch-size", "32", "--lr", "30",
                 "--schedule", "constant", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "training diverged in epoch 1" in err and "--lr 3" in err
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no state file


def test_loss_watch_allows_a_fine_tune_that_starts_near_zero():
    """10× a first loss of 0.01 is noise, not divergence: the reference is at least ln(classes)."""
    from neurotomy.errors import TrainingError
    from neurotomy.train import LossWatch

    watch = LossWatch(lr=0.01)
    for loss in (0.01, 0.2, 0.5, 1.0):
        watch.update(loss, classes=10, epoch=0, step=1)
    with pytest.raises(TrainingError, match="grew to"):
        for step in range(5):
            watch.update(40.0, classes=10, epoch=0, step=step)


def test_default_lr_is_lower_for_models_not_ours_and_torchvision_resnet18_learns():
    """At lr 0.1 a torchvision ResNet-18 trained from scratch on digits sits at a loss of 5–9; the
    default for models that are not neurotomy's own is 0.01, where it learns."""
    from neurotomy.train import default_learning_rate

    assert default_learning_rate(build_model("resnet20", 1, 10, 8)) == 0.1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy machine's two cores make two threads slower here, not faster
    try:
        model = train_new_model("torchvision:resnet18", "digits", None,
                                TrainConfig(epochs=3, batch_size=32, max_images=256, quiet=True))
    finally:
        torch.set_num_threads(threads)
    assert model.neurotomy_meta.train_config["lr"] == 0.01
    losses = [h["loss"] for h in model.neurotomy_meta.metrics["train_history"]]
    assert losses[-1] < losses[0] < 2.6
