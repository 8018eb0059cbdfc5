import json
import pickle
import subprocess
import sys

import pytest

from neurotomy.cli import main


@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "missing.safetensors"], "no such checkpoint"),
    (["evaluate", "zoo:nothing"], "no zoo model"),
    (["info", "resnet21"], "not a checkpoint, zoo:NAME or architecture"),
    (["evaluate", "zoo:lenet5-digits", "--data", "imagenet-42"], "unknown dataset"),
    (["evaluate", "zoo:lenet5-digits", "--data", "fashion-mnist", "--root", "/nonexistent"], "no such directory"),
])
def test_user_errors_one_line_nonzero(argv, needle, capsys):
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("neurotomy: error:")


def test_pickle_refused_via_subprocess(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    proc = subprocess.run([sys.executable, "-m", "neurotomy.cli", "evaluate", str(path), "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "pickle" in proc.stderr


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
