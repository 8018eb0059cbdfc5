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


def test_prune_json_and_reload(tmp_path, capsys):
    out = tmp_path / "pruned.safetensors"
    assert main(["prune", "zoo:lenet5-digits", "--criterion", "l2", "--target-macs", "0.4",
                 "--finetune-epochs", "1", "--no-latency", "--out", str(out), "--json", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    for key in ("macs_reduction", "params_reduction", "acc_original", "acc_pruned", "acc_recalibrated",
                "acc_finetuned", "score_seconds", "forward_seconds", "macs_ratio"):
        assert key in record, key
    assert main(["evaluate", str(out), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == record["acc_finetuned"]


def test_prune_user_errors(tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    assert main(["prune", "zoo:lenet5-digits", "--ratio", "1.0", "--out", str(out), "--quiet"]) == 2
    assert "impossible" in capsys.readouterr().err
    assert main(["prune", "zoo:lenet5-digits", "--out", str(out), "--quiet"]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["prune", "zoo:lenet5-digits", "--criterion", "magic", "--ratio", "0.2", "--out", str(out),
                 "--quiet"]) == 2
    assert "unknown criterion" in capsys.readouterr().err
    assert not out.exists()


def test_score_writes_npz(tmp_path, capsys):
    from neurotomy.scores import UnitScores
    assert main(["score", "zoo:lenet5-digits", "--criterion", "apoz", "--out", str(tmp_path / "s.npz"),
                 "--quiet"]) == 0
    assert UnitScores.load(tmp_path / "s.npz").criterion == "apoz"


def test_demo_dissects_the_shipped_resnet20(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--budget", "tiny", "--quiet"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"] == "zoo:resnet20-fmnist" and (tmp_path / "report.html").stat().st_size > 50_000
    pruning = next(s for s in report["sections"] if s["id"] == "pruning")
    numbers = {n["key"]: n["value"] for n in pruning["numbers"]}
    assert abs(numbers["macs_reduction"] - 0.5) <= 0.01
    assert pruning["tables"][0]["rows"][0][1] > 0.85  # the original's accuracy on the tiny test subset
    assert "smaller by" in capsys.readouterr().out


def test_inspect_writes_json_and_plots(tmp_path, capsys):
    out = tmp_path / "inspect"
    assert main(["inspect", "zoo:lenet5-digits", "--per-class", "20", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "inspect.json").read_text())
    assert len(result["modularity"]["q"]) == len(result["modularity"]["layers"]) == len(result["cka"]["values"])
    assert (out / "modularity.png").stat().st_size > 1000 and (out / "cka.png").stat().st_size > 1000
    assert "redundant by the rule" in capsys.readouterr().out


def test_prune_layers_needs_blocks_for_baselines(tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    assert main(["prune", "zoo:lenet5-digits", "--layers", "last", "--out", str(out), "--quiet"]) == 2
    assert "needs a number of blocks" in capsys.readouterr().err
    assert not out.exists()
