"""`info`, `train`, `evaluate` (neurotomy.cli.models); `finetune` under two processes is in test_main."""

import json

import pytest

from neurotomy.cli import main


def test_train_evaluate_json(tmp_path, capsys):
    out = tmp_path / "lenet.safetensors"
    assert main(["train", "lenet5", "--data", "digits", "--epochs", "3", "--batch-size", "32",
                 "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"accuracy", "per_class_precision", "per_class_recall", "confusion"}
    assert len(result["confusion"]) == 10


def test_info_prints_totals(capsys):
    assert main(["info", "zoo:lenet5-digits", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["total_params"] == sum(r["params"] for r in table["layers"]) > 0


DICT_NET = """
from torch import nn


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3), nn.Linear(4, 10)

    def forward(self, x):
        return {"logits": self.head(self.conv(x).mean((2, 3)))}


def make():
    return DictOut()
"""


@pytest.mark.parametrize("command", [
    ["train", "{net}", "--data", "digits", "--epochs", "1", "--out", "{tmp}/m.safetensors"],
    ["evaluate", "{net}", "--input-size", "8", "--data", "digits"],
    ["export", "{net}", "--input-size", "8", "--onnx", "{tmp}/m.onnx"],
    ["score", "{net}", "--input-size", "8", "--data", "digits", "--criterion", "taylor", "--out", "{tmp}/s.npz"],
])
def test_a_model_whose_forward_returns_a_dict_fails_at_the_door(command, tmp_path, capsys):
    net = tmp_path / "dict_net.py"
    net.write_text(DICT_NET)
    argv = [a.format(net=f"{net}:make", tmp=tmp_path) for a in command]
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "forward returned a dict with keys logits for 2 images" in err[0] and "wrap it" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dict_net.py"]


@pytest.mark.parametrize("command", [
    ["train", "lenet5", "--data", "digits", "--epochs", "1", "--teacher", "zoo:resnet20-fmnist",
     "--out", "{tmp}/m.safetensors"],
    ["finetune", "zoo:lenet5-digits", "--epochs", "1", "--teacher", "zoo:resnet20-fmnist",
     "--out", "{tmp}/m.safetensors"],
])
def test_a_teacher_of_other_inputs_fails_before_any_training(command, tmp_path, capsys):
    assert main([a.format(tmp=tmp_path) for a in command] + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes 1×28×28 inputs but" in err[0] and "takes 1×8×8" in err[0]
    assert not list(tmp_path.iterdir())
