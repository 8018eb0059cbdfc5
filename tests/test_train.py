import pytest
import torch
from torch.utils.data import TensorDataset

from neurotomy.data import load_dataset
from neurotomy.errors import DataError
from neurotomy.models import build_model
from neurotomy.jobs.new_model import train_new_model
from neurotomy.train import TrainConfig, classification_metrics, evaluate, fit, predict, seed_everything

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


def _lenet_and_data(n=32):
    """A fresh 10-class LeNet-5 for 8×8 grey images and n matching (image, label) tensors."""
    g = torch.Generator().manual_seed(0)
    return build_model("lenet5", 1, 10, 8), torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 10


def test_predict_and_evaluate_leave_the_callers_training_flag_as_it_was():
    model, images, labels = _lenet_and_data()
    for flag in (True, False):
        model.train(flag)
        evaluate(model, TensorDataset(images, labels), quiet=True)
        assert model.training is flag
        predict(model, TensorDataset(images, labels), quiet=True)
        assert model.training is flag


@pytest.mark.parametrize("data, message", [
    (lambda x, y: TensorDataset((x * 60 + 100).clamp(0, 255).byte(), y), "images are uint8 tensors"),
    (lambda x, y: TensorDataset(x[:, 0], y), "images are 8×8 with no channel axis"),
    (lambda x, y: TensorDataset(x.repeat(1, 3, 1, 1), y), "3-channel images but the model takes 1"),
    (lambda x, y: TensorDataset(x, y + 5), "the data has label 14 but the model has 10 classes"),
    (lambda x, y: TensorDataset(x, y - 1), "the data has label -1"),
    (lambda x, y: TensorDataset(x, y.float()), "the labels are float32 numbers"),
    (lambda x, y: TensorDataset(x[:0], y[:0]), "the data is empty"),
    # labels not at hand before the pass: evaluate checks them after it, fit each batch's before its step
    (lambda x, y: [(x[i], int(y[i]) + 5) for i in range(len(y))], "the data has label 14 but the model has 10"),
])
def test_data_the_model_cannot_take_is_one_line_in_evaluate_and_fit(data, message):
    model, images, labels = _lenet_and_data()
    before = [t.detach().clone() for t in model.state_dict().values()]  # BatchNorm statistics too
    with pytest.raises(DataError, match=message):
        evaluate(model, data(images, labels), quiet=True)
    with pytest.raises(DataError, match=message):
        fit(model, data(images, labels), TrainConfig(epochs=1, batch_size=8, quiet=True))
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values()))  # no batch was run


def test_plain_datasets_train_and_evaluate():
    model, images, labels = _lenet_and_data()
    pairs = [(images[i], int(labels[i])) for i in range(len(labels))]
    assert len(fit(model, pairs, TrainConfig(epochs=1, batch_size=8, quiet=True))) == 1
    assert evaluate(model, pairs, quiet=True)["n"] == len(pairs)


def test_classification_metrics_refuses_labels_past_the_last_class():
    with pytest.raises(DataError, match="the data has label 3 but the model has 3 classes"):
        classification_metrics(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)


def test_labels_read_batch_by_batch_are_checked_before_the_model_sees_the_batch():
    from torch import nn

    _, images, labels = _lenet_and_data()
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    pairs = [(images[i], int(labels[i]) + 5) for i in range(len(labels))]  # no targets: checked per batch
    with pytest.raises(DataError, match="the data has label 14 but the model has 10 classes"):
        fit(model, pairs, TrainConfig(epochs=1, batch_size=8, quiet=True))
    assert int(model[1].num_batches_tracked) == 0 and torch.equal(model[1].running_mean, torch.zeros(4))


def test_a_model_with_more_outputs_than_the_data_names_classes_counts_those_predictions_as_wrong():
    data = load_dataset("digits", split="test")
    model = build_model("lenet5", 1, 12, 8).eval()
    with torch.no_grad():
        model.classifier[-1].bias.copy_(torch.tensor([0.0] * 11 + [1e6]))  # always predicts class 11
    metrics = evaluate(model, data, quiet=True)
    assert metrics["accuracy"] == 0.0 and len(metrics["classes"]) == len(metrics["per_class_recall"]) == 12
    assert metrics["classes"][:10] == list(data.classes) and metrics["confusion"][0][11] > 0
