"""The class jobs (neurotomy.jobs.classes, neurotomy.jobs.split): an interrupted split resumes from
its finished modules; a fine-tune that lowers a module's calibration accuracy is not kept; a patch
that makes the weak model worse is refused."""

import pytest
import torch

from neurotomy.checkpoint import save_checkpoint
from neurotomy.cli import main
from neurotomy.errors import NeurotomyWarning, WorseResultError
from neurotomy.jobs.classes import patch_job, split_job
from neurotomy.jobs.split import split
from neurotomy.surgery.class_modules import cut_class_module
from neurotomy.run_state import RunState

SPLIT = dict(calibration_images=200, finetune_epochs=1, finetune_images=300, quiet=True)


def _without_paths(records):
    return [{k: v for k, v in r.items() if k != "checkpoint"} for r in records]


def test_split_resumes_from_its_finished_modules(lenet_digits, tmp_path, monkeypatch, one_thread):
    model, train, test = lenet_digits
    expected = split_job(model, train, test, [0, 1, 2], tmp_path / "whole", **SPLIT)

    cut = cut_class_module

    def crash_at(classes):
        def cut_or_crash(model, data, class_index, **kw):
            if class_index in classes:
                raise RuntimeError(f"class {class_index}")
            return cut(model, data, class_index, **kw)
        return cut_or_crash

    out = tmp_path / "modules"
    monkeypatch.setattr("neurotomy.jobs.split.cut_class_module", crash_at({2}))
    with pytest.raises(RuntimeError, match="class 2"), RunState.beside(out) as state:
        split_job(model, train, test, [0, 1, 2], out, **SPLIT, state=state)
    assert sorted(p.name for p in out.iterdir()) == ["class0.safetensors", "class1.safetensors"]
    monkeypatch.setattr("neurotomy.jobs.split.cut_class_module", crash_at({0, 1}))  # must not be redone
    with RunState.beside(out, resume=True) as state:
        result = split_job(model, train, test, [0, 1, 2], out, **SPLIT, state=state)
    assert not state.path.exists()
    assert _without_paths(result["modules"]) == _without_paths(expected["modules"])
    assert result["set"] == expected["set"]
    for a, b in zip(result["_modules"], expected["_modules"]):
        for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
            assert torch.equal(x, y)


def _ruin(model, *args, **kwargs):
    """A 'fine-tune' that makes the module worse."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1)
    return []


def test_a_module_fine_tune_that_lowers_calibration_accuracy_is_not_kept(lenet_digits, monkeypatch, one_thread):
    model, train, _ = lenet_digits
    untuned = split(model, train, 3, **{**SPLIT, "finetune_epochs": 0})
    monkeypatch.setattr("neurotomy.jobs.split.fit", _ruin)
    with pytest.warns(NeurotomyWarning, match="class 3: fine-tuning lowered"):
        module = split(model, train, 3, **SPLIT)
    details = module.details
    assert details["finetune_kept"] is False
    before, after = (details[f"calibration_balanced_accuracy_{when}_finetune"] for when in ("before", "after"))
    assert after < before
    for a, b in zip(module.model.state_dict().values(), untuned.model.state_dict().values()):
        assert torch.equal(a, b)
    forced = split(model, train, 3, **SPLIT, force=True)
    assert forced.details["finetune_kept"] is True
    assert not all(torch.equal(a, b) for a, b in zip(forced.model.state_dict().values(),
                                                      untuned.model.state_dict().values()))


def test_a_patch_that_makes_the_weak_model_worse_is_refused(lenet_digits, tmp_path, capsys):
    model, train, test = lenet_digits
    module = cut_class_module(model, train, 3, calibration_images=200, quiet=True)
    with torch.no_grad():  # a module that answers "3" at random
        for p in module.model.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(WorseResultError, match=r"class 3 F1 0\.\d+ → 0\.\d+, accuracy"):
        patch_job(model, module.model, train, test, quiet=True)
    _, record = patch_job(model, module.model, train, test, quiet=True, force=True)
    check = record["calibration_check"]
    assert check["f1_after"] < check["f1_before"] and check["images"] == len(train)

    path = save_checkpoint(module.model, module.model.neurotomy_meta, tmp_path / "bad3")
    out = tmp_path / "patched.safetensors"
    assert main(["patch", "zoo:lenet5-digits", "--module", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing written" in err and not out.exists()


def test_scores_that_count_no_image_of_the_class_name_the_other_criterion(lenet_digits):
    from neurotomy.errors import NeurotomyError
    from neurotomy.scores.unit_scores import UnitScores

    model, train, _ = lenet_digits
    scores = UnitScores({}, "class_activation", "class", {"images_per_class": [0] * 10})
    with pytest.raises(NeurotomyError, match="--criterion class_taylor"):
        cut_class_module(model, train, 3, scores=scores, calibration_images=100, quiet=True)


def test_a_module_with_recall_zero_is_written_with_a_warning(lenet_digits, tmp_path, monkeypatch, one_thread):
    from neurotomy.surgery import class_modules

    measured = class_modules.module_metrics
    monkeypatch.setattr(class_modules, "module_metrics", lambda *a, **k: {**measured(*a, **k), "recall": 0.0})
    model, train, test = lenet_digits
    with pytest.warns(NeurotomyWarning, match="class 2: the module finds none of the class's test images"):
        result = split_job(model, train, test, [2], tmp_path / "mods", calibration_images=100, finetune_epochs=0,
                           quiet=True)
    assert (tmp_path / "mods" / "class2.safetensors").exists() and result["modules"][0]["recall"] == 0
