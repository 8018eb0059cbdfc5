"""The shipped ResNet-20 on the full 10k Fashion-MNIST test set (needs ../shared data)."""

import json

import torch

from neurotomy.cli import main
from neurotomy.data import load_dataset
from neurotomy.loading import load_model


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
