"""`info`, `train`, `evaluate` (neurotomy.cli.models); `finetune` under two processes is in test_main."""

import json

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
