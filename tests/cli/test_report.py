"""`dissect`, `demo` (neurotomy.cli.report)."""

import json

import pytest

from neurotomy.cli import main
from neurotomy.jobs import dissect
from neurotomy.jobs.budget import MAX_BUDGET_EPOCHS, finetune_epochs_for


def test_dissect_command_writes_the_report(tmp_path, capsys, monkeypatch):
    fitted = []  # (seconds elapsed, seconds per epoch) the job measured when it fitted the epochs

    def spy(budget, elapsed_s, epoch_s, **kw):
        fitted.append((elapsed_s, epoch_s))
        return finetune_epochs_for(budget, elapsed_s, epoch_s, **kw)
    monkeypatch.setattr(dissect, "finetune_epochs_for", spy)
    out = tmp_path / "report"
    assert main(["dissect", "zoo:lenet5-digits", "--budget", "0.3", "--target-macs", "0.4", "--criterion", "fpgm",
                 "--scope", "global", "--seed", "3", "--out", str(out), "--quiet", "--no-deploy"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert (report["criterion"], report["scope"], report["seed"], report["target_macs"]) == ("fpgm", "global", 3, 0.4)
    # a minutes budget: the fast preset's data and criteria, fine-tune epochs fitted to the time left
    assert report["budget"]["minutes"] == 0.3 and report["train_images"] == 1437
    # fitted once: what is left of 0.3 min less a 30 % reserve, over the measured cost of an epoch
    (elapsed, epoch_seconds), = fitted
    assert report["finetune_epochs"] == max(0, min(MAX_BUDGET_EPOCHS, int((0.3 * 60 * 0.7 - elapsed) // epoch_seconds)))
    stages = next(s for s in report["sections"] if s["id"] == "pruning")["tables"][0]["rows"]
    assert any("fine-tune" in row[0] for row in stages) == (report["finetune_epochs"] > 0)
    # the fast settings measure latency: the verdict's "faster by" is the batch-64 speed-up of the record
    pruning = {n["key"]: n["value"] for s in report["sections"] if s["id"] == "pruning" for n in s["numbers"]}
    verdict = {i["key"]: i["value"] for i in report["verdict"]["items"]}
    assert verdict["speedup"] == pruning["speedup_batch64"] > 0 and "speedup_batch1" in pruning
    assert printed.startswith("smaller by") and "report.html" in printed
    assert (out / "report.html").exists() and (out / "pruned.safetensors").exists()
    # a minutes budget times latency, so it would deploy where onnxruntime is installed: --no-deploy turned it off
    assert "deployment" not in [s["id"] for s in report["sections"]]
    stages = [row[0] for row in report["sections"][-1]["tables"][0]["rows"]]
    assert len(stages) == 9 and not any(name.startswith("deployment") for name in stages)  # 8 stages + total


@pytest.mark.parametrize("flag, deploy", [([], None), (["--no-deploy"], False), (["--deploy"], True)])
def test_dissect_passes_the_deployment_switch(tmp_path, capsys, monkeypatch, flag, deploy):
    from neurotomy.errors import NeurotomyError

    asked = {}

    def spy(*args, **kwargs):
        asked.update(kwargs)
        raise NeurotomyError("stopped here")
    monkeypatch.setattr(dissect, "dissect", spy)
    assert main(["dissect", "zoo:lenet5-digits", "--out", str(tmp_path / "r"), "--quiet", *flag]) == 2
    assert asked["deploy"] is deploy and "stopped here" in capsys.readouterr().err


def test_demo_dissects_the_shipped_resnet20(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--budget", "tiny", "--quiet"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"] == "zoo:resnet20-fmnist" and (tmp_path / "report.html").stat().st_size > 50_000
    pruning = next(s for s in report["sections"] if s["id"] == "pruning")
    numbers = {n["key"]: n["value"] for n in pruning["numbers"]}
    assert abs(numbers["macs_reduction"] - 0.5) <= 0.01
    assert pruning["tables"][0]["rows"][0][1] > 0.85  # the original's accuracy on the tiny test subset
    assert "smaller by" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["--budget", "soon"], "positive number of minutes"),
    (["--target-macs", "1.5"], "expected a fraction in (0, 1)"),
    (["--criterion", "l7"], "unknown criterion"),
    (["--data", "imagenet-42"], "unknown dataset"),
])
def test_dissect_user_errors_one_line(tmp_path, capsys, argv, needle):
    out = tmp_path / "r"
    assert main(["dissect", "zoo:lenet5-digits", "--out", str(out), "--quiet"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neurotomy: error:") and needle in err[0]
    assert not out.exists()
