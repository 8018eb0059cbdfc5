"""benchmarks/classes.py --redo (issue #17): a rerun part drops exactly its own records, and the whole-file
legacy stamp goes only once no record from before the stamps is left."""

from tests.benchmark_scripts import load_benchmark

OLD = {"git_commit": "a", "load_average_start": None}
NEW = {"git_commit": "b", "load_average_start": [0.5, 0.5, 0.5]}


def results() -> dict:
    return {"subsets": [{"model": "resnet20-fmnist", **OLD}, {"model": "resnet56-fmnist", **OLD}],
            "heads": [{"model": "resnet20-fmnist", **OLD}],
            "modules": [{"class": 0, **OLD}], "patching": [{"target_class": 0, **OLD}],
            "subsets_by_depth": [{"model": "vgg16-fmnist", **NEW}, {"model": "resnet20-fmnist", **NEW}],
            "provenance": {"before_stamps": dict(OLD)}}


def test_redo_drops_only_the_named_parts_records():
    classes = load_benchmark("classes")
    result = results()
    classes.drop_parts(result, ["subsets20", "patching"], depth_models=["zoo:vgg16-fmnist"])
    assert [r["model"] for r in result["subsets"]] == ["resnet56-fmnist"]  # the other model's part stays
    assert result["heads"] == [] and result["patching"] == []
    assert len(result["modules"]) == 1 and len(result["subsets_by_depth"]) == 2
    assert "before_stamps" in result["provenance"]  # legacy records are left, so is their stamp

    classes.drop_parts(result, ["subsets56", "modules_patch", "subsets_by_depth"],
                       depth_models=["zoo:vgg16-fmnist"])
    assert result["subsets"] == [] and result["modules"] == []
    assert [r["model"] for r in result["subsets_by_depth"]] == ["resnet20-fmnist"]
    assert "before_stamps" not in result["provenance"]  # nothing from before the stamps is left
