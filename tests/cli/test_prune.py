"""`score`, `prune`, `inspect` (neurotomy.cli.prune)."""

import json

from neurotomy.cli import main


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
    assert "argument --ratio: expected a fraction in (0, 1)" in capsys.readouterr().err
    assert main(["prune", "zoo:lenet5-digits", "--out", str(out), "--quiet"]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["prune", "zoo:lenet5-digits", "--criterion", "magic", "--ratio", "0.2", "--out", str(out),
                 "--quiet"]) == 2
    assert "unknown criterion" in capsys.readouterr().err
    assert main(["prune", "zoo:lenet5-digits", "--ratio", "0.2", "--distill", "--distill-alpha", "1.5", "--out",
                 str(out), "--quiet"]) == 2
    assert "argument --distill-alpha: expected a fraction in [0, 1]" in capsys.readouterr().err
    assert not out.exists()


def test_prune_fine_tune_recipe_is_recorded(tmp_path, capsys):
    out = tmp_path / "pruned.safetensors"
    assert main(["prune", "zoo:lenet5-digits", "--ratio", "0.3", "--finetune-epochs", "1", "--distill",
                 "--distill-temperature", "3", "--distill-alpha", "0.6", "--finetune-batch", "32", "--lr", "0.02",
                 "--no-latency", "--out", str(out), "--json", "--quiet"]) == 0
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert (settings["distill"], settings["distill_temperature"], settings["distill_alpha"]) == (True, 3.0, 0.6)
    assert (settings["finetune_batch"], settings["finetune_lr"]) == (32, 0.02)


def test_score_writes_npz(tmp_path, capsys):
    from neurotomy.scores import UnitScores
    assert main(["score", "zoo:lenet5-digits", "--criterion", "apoz", "--out", str(tmp_path / "s.npz"),
                 "--quiet"]) == 0
    assert UnitScores.load(tmp_path / "s.npz").criterion == "apoz"


def test_score_out_without_npz_writes_and_names_the_npz(tmp_path, capsys):
    assert main(["score", "zoo:lenet5-digits", "--criterion", "l1", "--out", str(tmp_path / "s.txt"), "--quiet"]) == 0
    assert (tmp_path / "s.txt.npz").is_file() and not (tmp_path / "s.txt").exists()
    assert "s.txt.npz" in capsys.readouterr().out


def test_inspect_writes_json_and_plots(tmp_path, capsys):
    out = tmp_path / "inspect"
    assert main(["inspect", "zoo:lenet5-digits", "--per-class", "20", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "inspect.json").read_text())
    assert len(result["modularity"]["q"]) == len(result["modularity"]["layers"]) == len(result["cka"]["values"])
    assert (out / "modularity.png").stat().st_size > 1000 and (out / "cka.png").stat().st_size > 1000
    assert "redundant by the rule" in capsys.readouterr().out


def test_inspect_that_fails_leaves_no_directory(tmp_path, capsys, monkeypatch):
    from neurotomy.errors import ModelError
    from neurotomy.jobs import inspect

    def fails(*args, **kwargs):
        raise ModelError("cannot analyse this model")

    monkeypatch.setattr(inspect, "modularity_curve", fails)
    out = tmp_path / "inspect"
    assert main(["inspect", "zoo:lenet5-digits", "--per-class", "20", "--out", str(out), "--quiet"]) == 2
    assert "cannot analyse" in capsys.readouterr().err and not out.exists()


def test_prune_layers_needs_blocks_for_baselines(tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    assert main(["prune", "zoo:lenet5-digits", "--layers", "last", "--out", str(out), "--quiet"]) == 2
    assert "needs a number of blocks" in capsys.readouterr().err
    assert not out.exists()


def test_prune_reconstruct(tmp_path, capsys, one_thread):
    """--reconstruct refits the cut model; its accuracy is recorded next to the recalibrated one and
    the checkpoint written is the reconstructed model."""
    out = tmp_path / "rebuilt.safetensors"
    assert main(["prune", "zoo:lenet5-digits", "--target-macs", "0.6", "--reconstruct", "--reconstruct-images", "512",
                 "--no-latency", "--out", str(out), "--json", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["settings"]["reconstruct"] and record["reconstruction"]["images"] == 512
    assert record["reconstruction"]["mean_error_after"] < record["reconstruction"]["mean_error_before"]
    assert record["acc_reconstructed"] > record["acc_recalibrated"]
    assert main(["evaluate", str(out), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == record["acc_reconstructed"]
    assert main(["prune", "zoo:lenet5-digits", "--ratio", "0.2", "--reconstruct-images", "0", "--out", str(out),
                 "--quiet"]) == 2
    assert "--reconstruct-images" in capsys.readouterr().err
