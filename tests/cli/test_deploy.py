"""`neurotomy deploy` (neurotomy.cli.deploy): the files and the table, and each refusal — one line,
exit status 2, nothing written."""

import json
import re

import pytest

from neurotomy.cli import main

pytest.importorskip("onnxruntime")

CHEAP = ["--calibration-images", "64", "--reason-images", "4", "--quiet"]

PRELU_NET = '''from torch import nn


def build(in_channels=1, num_classes=10, input_size=8):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.PReLU(4), nn.Flatten(),
                         nn.Linear(4 * input_size * input_size, num_classes))
'''


def test_deploy_json_and_table(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["deploy", "zoo:lenet5-digits", "--data", "digits", "--out", str(out), "--int8", "--json", *CHEAP]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [r["format"] for r in record["rows"]] == ["torch", "onnx-fp32", "onnx-int8"]
    assert record["rows"][0]["model"] == "zoo:lenet5-digits"
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.int8.onnx", "model.onnx"]
    # no --data: the model's own dataset, as every other command takes it
    assert main(["deploy", "zoo:lenet5-digits", "--out", str(out), "--latency-batch", "8", *CHEAP[:-1]]) == 0
    said = capsys.readouterr()
    assert "no --data given; using the model's own dataset digits" in said.err
    lines = said.out.splitlines()
    assert lines[0].split()[:5] == ["format", "accuracy", "size", "batch", "1"] and "batch 8" in lines[0]
    assert [line.split()[0] for line in lines[1:3]] == ["torch", "onnx-fp32"] and "reference" in lines[1]
    assert not (out / "model.int8.onnx").exists()  # this run made no int8 file: the old one is gone


@pytest.mark.parametrize("argv, needle", [
    (["--data", "fashion-mnist"], "images are 28×28 but the model was trained on 8×8 and does not run on them"),
    (["--data", "digits", "--int8", "--calibration-images", "1", "--max-drop", "0.1"],
     re.compile(r"int8 accuracy \d+\.\d\d% is \d+\.\d\d pt below the fp32 ONNX model's \d+\.\d\d% "
                r"\(more than --max-drop 0\.1\)")),
    (["--data", "digits", "--calibration-images", "0"], "argument --calibration-images: expected a positive integer"),
    (["--data", "digits", "--max-drop", "-1"], "argument --max-drop"),
])
def test_bad_input_is_refused_with_nothing_written(argv, needle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["deploy", "zoo:lenet5-digits", "--out", str(out), "--reason-images", "0", "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (needle.search(err[-1]) if isinstance(needle, re.Pattern) else needle in err[-1])
    assert err[-1].startswith("neurotomy: error:")
    assert list(tmp_path.iterdir()) == []


def test_a_model_onnxruntime_cannot_quantize_is_named(tmp_path, capsys):
    source = tmp_path / "prelu_net.py"
    source.write_text(PRELU_NET)
    out = tmp_path / "out"
    assert main(["deploy", f"{source}:build", "--input-size", "8", "--data", "digits", "--out", str(out), "--int8",
                 *CHEAP]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "onnxruntime cannot quantize op PRelu" in err[-1] and err[-1].endswith("or deploy without --int8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prelu_net.py"]
