"""The zoo's recorded accuracies, recomputed: every model on the test data shipped in the package,
and the shipped ResNet-20 on the full 10k Fashion-MNIST test set (needs ../shared data)."""

import json
import math

import pytest
import torch

from neurotomy.cli import main
from neurotomy.data import load_dataset
from neurotomy.loading import load_model
from neurotomy.loading.zoo import ZOO
from tests.crosscheck import one_thread


def accuracy(model, data, batch=500) -> float:
    with torch.inference_mode(), one_thread():  # see tests/crosscheck.py
        predicted = torch.cat([model(data.images[i:i + batch].float()).argmax(1) for i in range(0, len(data), batch)])
    return float((predicted == data.targets).double().mean())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_load(name):
    """Each checkpoint's recorded test accuracy (over its n test images) against its accuracy
    recomputed on the test split shipped in the package (n_shipped images, drawn from the same test
    set: all 360 digits; 200 of the 1000 Fashion-MNIST test images of each class).

    Where the shipped split is the recorded one, the two must agree to one image (a near-tie may
    flip with the arithmetic). Where it is a sample of n_shipped of the n images, its accuracy
    estimates the recorded one with standard error √(p(1 − p)/n_shipped · (n − n_shipped)/(n − 1))
    (sampling without replacement; class-stratified, which can only shrink it); we allow 3.5 of
    them (0.016 for ResNet-20: it measures 0.9385 against 0.9465, 1.8 errors off)."""
    model = load_model(f"zoo:{name}").eval()
    meta = model.neurotomy_meta
    recorded, n = meta.metrics["test"]["accuracy"], meta.metrics["test"]["n"]
    data = load_dataset(meta.dataset, split="test")
    shipped, measured = len(data), accuracy(model, data)
    assert shipped <= n and measured > 0.9  # trained: far from chance (0.1)
    standard_error = math.sqrt(recorded * (1 - recorded) / shipped * (n - shipped) / max(1, n - 1))
    tolerance = max(3.5 * standard_error, 1 / shipped + 1e-12)
    assert abs(measured - recorded) <= tolerance, (measured, recorded, tolerance)


def test_resnet20_fmnist_full_test_accuracy(full_fmnist_root, capsys):
    assert main(["evaluate", "zoo:resnet20-fmnist", "--data", "fashion-mnist", "--root",
                 str(full_fmnist_root), "--json", "--quiet"]) == 0
    cli_acc = json.loads(capsys.readouterr().out)["accuracy"]
    assert cli_acc >= 0.94

    model = load_model("zoo:resnet20-fmnist")
    data = load_dataset("fashion-mnist", root=full_fmnist_root, split="test")
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data), 500):
            x, y = data[i:i + 500]
            correct += int((model(x).argmax(1) == y).sum())
    assert correct / len(data) == cli_acc
    assert len(data) == 10000
