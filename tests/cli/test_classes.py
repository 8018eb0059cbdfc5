"""`subsets`, `split`, `patch` (neurotomy.cli.classes)."""

import json

from safetensors.torch import load_file

from neurotomy.cli import main


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
    assert [m["class"] for m in result["modules"]] == [3, 5] and 0 <= result["set"]["coupling"] <= 1
    assert (modules / "class3.safetensors").exists() and (modules / "summary.json").exists()

    out = tmp_path / "patched"
    assert main(["patch", "zoo:lenet5-digits", "--module", str(modules / "class3"), "--out", str(out),
                 "--json", "--quiet"]) == 0
    patched = json.loads(capsys.readouterr().out)
    assert patched["target_class"] == 3 and 0 <= patched["precision_after"] <= 1
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
