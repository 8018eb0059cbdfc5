import json

import pytest
import torch
from torch import nn

from neurotomy.cli import main
from neurotomy.errors import NeurotomyError
from neurotomy.export import export_onnx

pytest.importorskip("onnxruntime")


def test_pruned_zoo_model_exports_and_matches(tmp_path, capsys):
    pruned = tmp_path / "pruned.safetensors"
    assert main(["prune", "zoo:resnet20-fmnist", "--criterion", "l1", "--target-macs", "0.5", "--no-latency",
                 "--max-images", "256", "--recalibrate-images", "256", "--out", str(pruned), "--quiet"]) == 0
    capsys.readouterr()
    onnx_path = tmp_path / "pruned.onnx"
    assert main(["export", str(pruned), "--onnx", str(onnx_path), "--compare", "zoo:resnet20-fmnist",
                 "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] <= 1e-4 and onnx_path.stat().st_size == report["bytes"]
    assert report["onnx_latency_ms"]["this"]["median_ms"] > 0


class NotExportable(nn.Module):
    def forward(self, x):
        return torch.fft.fft2(x).abs().flatten(1)  # complex ops have no ONNX lowering


def test_unexportable_op_fails_clearly(tmp_path):
    with pytest.raises(NeurotomyError, match=r"ONNX cannot export.*try another opset \(opset=, --opset\)"):
        export_onnx(NotExportable(), tmp_path / "x.onnx", input_shape=(1, 4, 4))
    assert not (tmp_path / "x.onnx").exists()


def test_compare_model_of_other_inputs_fails_before_the_onnx_file_is_written(tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "zoo:lenet5-digits", "--onnx", str(onnx_path), "--compare", "zoo:resnet20-fmnist",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--compare zoo:resnet20-fmnist takes 1×28×28 inputs but zoo:lenet5-digits takes 1×8×8" in err[0]
    assert not onnx_path.exists()


class BatchBakedIn(nn.Module):
    """A class token expanded to len(x): tracing records the batch size as a constant."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 4))

    def forward(self, x):
        return torch.cat([self.cls.expand(len(x), -1), x.flatten(1)], 1)


def test_graph_with_a_baked_in_batch_size_fails_in_one_line_naming_the_cause(tmp_path, capfd):
    with pytest.raises(NeurotomyError, match=r"runs at batch size 2 but not 8 .*len\(x\).*expand\(x.shape\[0\]"):
        export_onnx(BatchBakedIn(), tmp_path / "x.onnx", input_shape=(1, 2, 2))
    assert not (tmp_path / "x.onnx").exists()
    assert "onnxruntime" not in capfd.readouterr().err  # onnxruntime's own log line stays off stderr


def test_an_upsampling_adaptive_pool_names_the_input_size_and_prints_no_graph(tmp_path, capfd):
    # VGG's AdaptiveAvgPool2d(7) on a 1×1 map (a 32 px input) cannot go to ONNX; torch's exporter also
    # logs its whole IR graph on standard output (from C++) before raising
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=4), nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(4 * 49, 3))
    with pytest.raises(NeurotomyError, match=r"adaptive_avg_pool2d.*; export at a larger input size \(--input-size"):
        export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 4, 4))
    out, _ = capfd.readouterr()
    assert "graph" not in out and out.strip() == ""
    assert not (tmp_path / "m.onnx").exists()
