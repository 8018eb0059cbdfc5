"""`subsets`, `split`, `patch` (neurotomy.cli.classes)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from neurotomy.cli import main
from neurotomy.data import load_dataset
from neurotomy.loading import load_model


def kept_filters(checkpoint) -> set[tuple[str, int]]:
    """(conv, filter) pairs of the original LeNet-5 that a class module keeps: all but the ones its
    recipe's ``prune_out_channels`` steps remove."""
    convs = {n: m.out_channels for n, m in load_model("zoo:lenet5-digits").named_modules()
             if isinstance(m, torch.nn.Conv2d)}
    removed = {(step["layer"], i) for step in load_model(str(checkpoint)).neurotomy_meta.recipe
               if step["op"] == "prune_out_channels" for i in step["idxs"]}
    return {(n, i) for n, c in convs.items() for i in range(c)} - removed


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def test_subsets_split_patch_commands(tmp_path, capsys):
    assert main(["subsets", "zoo:lenet5-digits", "--head-k", "3", "--finetune-epochs", "1", "--json",
                 "--out", str(tmp_path / "subsets.json"), "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["width"] == 84 and len(record["subsets"]) == 10
    assert all(1 <= r["size"] <= 84 for r in record["subsets"])
    assert json.loads((tmp_path / "subsets.json").read_text())["heads"][0]["k"] == 3

    modules = tmp_path / "modules"
    assert main(["split", "zoo:lenet5-digits", "--classes", "3,5", "--out", str(modules), "--max-images", "500",
                 "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [m["class"] for m in result["modules"]] == [3, 5]
    assert (modules / "class3.safetensors").exists() and (modules / "summary.json").exists()
    # coupling: the Jaccard overlap of the conv filters the two modules keep, read back from their recipes
    assert result["set"]["coupling"] == pytest.approx(jaccard(kept_filters(modules / "class3.safetensors"),
                                                             kept_filters(modules / "class5.safetensors")))

    out = tmp_path / "patched"
    # patching the strong model with its own module lowers its calibration F1 of class 3: refused, nothing written
    assert main(["patch", "zoo:lenet5-digits", "--module", str(modules / "class3"), "--out", str(out),
                 "--json", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "worse on the calibration set" in err and "--force" in err and not list(tmp_path.glob("patched*"))
    assert main(["patch", "zoo:lenet5-digits", "--module", str(modules / "class3"), "--out", str(out),
                 "--json", "--quiet", "--force"]) == 0
    patched = json.loads(capsys.readouterr().out)
    assert patched["target_class"] == 3
    # precision of class 3 on the test split, recomputed from the written checkpoint
    test = load_dataset("digits", split="test")
    with torch.no_grad():
        said = load_model(str(out) + ".safetensors")(test.images).argmax(1) == 3
    assert patched["precision_after"] == pytest.approx(int((said & (test.targets == 3)).sum()) / int(said.sum()))
    assert any(k.startswith("module.") for k in load_file(str(out) + ".safetensors"))
    assert main(["evaluate", str(out) + ".safetensors", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.9


def test_class_command_errors_are_one_line(tmp_path, capsys):
    for argv, needle in ((["split", "zoo:lenet5-digits", "--classes", "3,12", "--out", str(tmp_path)], "--classes"),
                         (["patch", "zoo:lenet5-digits", "--module", str(tmp_path / "nope"), "--out",
                           str(tmp_path / "p")], "no such checkpoint"),
                         (["patch", "zoo:lenet5-digits", "--module", "zoo:lenet5-digits", "--out",
                           str(tmp_path / "p")], "not a class module")):
        assert main(argv + ["--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "p.safetensors").exists()


def test_subsets_text_names_each_class(monkeypatch, capsys):
    """The text output names a class by its dataset name where the name says more than the number."""
    import neurotomy.jobs.classes as jobs

    def canned(model, train, test, **options):
        return {"layer": "fc", "width": 64, "heads": [],
                "subsets": [{"class": c, "size": 3, "width": 64, "features": [1, 2, 3]} for c in (0, 1)]}

    monkeypatch.setattr(jobs, "subsets_job", canned)
    assert main(["subsets", "zoo:resnet20-fmnist", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "class 0 (T-shirt/top):" in out and "class 1 (Trouser):" in out
