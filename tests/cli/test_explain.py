"""`explain`, `rate-explanations`, `compare-reasons` (neurotomy.cli.explain) on the shipped model and data."""

import json

import pytest

from neurotomy.cli import main
from neurotomy.errors import NeurotomyWarning


def test_explain_list(capsys):
    assert main(["explain", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("gradient", "integrated_gradients", "gradcam", "scorecam", "eigencam", "pathway", "sobel"):
        assert f"\n{name} " in f"\n{out}"


def test_explain_writes_a_grid(tmp_path, capsys):
    out = tmp_path / "maps.png"
    assert main(["explain", "zoo:resnet20-fmnist", "--method", "gradcam", "pathway", "--n", "3",
                 "--prune-fraction", "0.5", "--out", str(out), "--quiet"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gradcam, pathway" in capsys.readouterr().out


def test_rate_explanations_table_and_json(tmp_path, capsys):
    out = tmp_path / "rates.json"
    assert main(["rate-explanations", "zoo:resnet20-fmnist", "--methods", "gradient,sobel", "--metrics",
                 "deletion", "morf", "--n", "4", "--out", str(out), "--quiet"]) == 0
    record = json.loads(out.read_text())
    assert set(record["scores"]) == {"gradient", "sobel"}
    assert set(record["scores"]["sobel"]) == {"deletion", "morf"} and record["n"] == 4
    assert "gradient" in capsys.readouterr().out


def test_compare_reasons_of_a_model_with_itself_is_perfect(tmp_path, capsys):
    out = tmp_path / "reasons.json"
    assert main(["compare-reasons", "zoo:resnet20-fmnist", "zoo:resnet20-fmnist", "--methods", "gradcam",
                 "--n", "5", "--out", str(out), "--quiet"]) == 0
    record = json.loads(out.read_text())
    assert record["methods"]["gradcam"]["spearman"] == pytest.approx(1.0)
    assert record["methods"]["gradcam"]["iou"] == pytest.approx(1.0)
    assert record["prediction_agreement"] == 1.0


@pytest.mark.parametrize("argv, needle", [
    (["explain", "zoo:resnet20-fmnist", "--method", "gradcam", "--layer", "nope", "--out", "X"], "no layer 'nope'"),
    (["explain", "zoo:resnet20-fmnist", "--method", "magic", "--out", "X"], "unknown method 'magic'"),
    (["rate-explanations", "zoo:resnet20-fmnist", "--metrics", "vibes", "--n", "2"], "unknown metric 'vibes'"),
    (["explain", "zoo:resnet20-fmnist"], "needs MODEL and --out"),
    (["compare-reasons", "zoo:resnet20-fmnist", "zoo:lenet5-digits", "--methods", "gradient", "--n", "2", "--out", "X"],
     "zoo:lenet5-digits takes 1×8×8 inputs but zoo:resnet20-fmnist takes 1×28×28"),
])
def test_user_errors(argv, needle, tmp_path, capsys):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


FUNCTIONAL_NET = '''
import torch.nn.functional as F
from torch import nn


class Functional(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


def make(num_classes=10):
    return Functional(num_classes)
'''

LINEAR_NET = FUNCTIONAL_NET.replace("F.relu(self.conv(x))", "self.conv(x)")  # no activation at all


def test_compare_reasons_names_methods_when_pathway_cannot_run(tmp_path, capsys):
    net = tmp_path / "linear_net.py"
    net.write_text(LINEAR_NET)
    model = f"{net}:make"
    assert main(["compare-reasons", model, model, "--data", "digits", "--input-size", "8", "--methods", "gradient",
                 "pathway", "--n", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--methods gradient" in err and len(err.strip().splitlines()) == 1


def test_compare_reasons_by_default_compares_the_methods_that_apply(tmp_path, capsys):
    net = tmp_path / "linear_net.py"
    net.write_text(LINEAR_NET)
    model = f"{net}:make"
    with pytest.warns(NeurotomyWarning, match="the pathway explanation is skipped"):
        assert main(["compare-reasons", model, model, "--data", "digits", "--input-size", "8", "--n", "2", "--json",
                     "--quiet"]) == 0
    assert list(json.loads(capsys.readouterr().out)["methods"]) == ["gradient", "gradcam"]
    net = tmp_path / "functional_net.py"
    net.write_text(FUNCTIONAL_NET)
    model = f"{net}:make"  # F.relu called in forward: pathway masks the call
    assert main(["compare-reasons", model, model, "--data", "digits", "--input-size", "8", "--n", "2", "--json",
                 "--quiet"]) == 0
    assert list(json.loads(capsys.readouterr().out)["methods"]) == ["gradient", "gradcam", "pathway"]
