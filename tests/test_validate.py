"""The validators shared by the CLI and the public API (neurotomy.validate), and the API functions
that check their arguments with them before any work."""

from __future__ import annotations

import math
import re

import pytest
import torch

from neurotomy import validate
from neurotomy.errors import NeurotomyError, OptionError, PruningError


@pytest.mark.parametrize("validator, good, bad", [
    (validate.positive_int, [(1, 1), ("7", 7), (" 3 ", 3), (2**63 - 1, 2**63 - 1)],
     [0, -1, "0", "-2", "1.5", "nan", "", "abc", 1.0, True, None, 2**63, "9" * 50, "١٢"]),
    (validate.non_negative_int, [(0, 0), ("0", 0), (5, 5)], [-1, "-1", "x", 0.5]),
    (validate.seed, [(0, 0), (2**63 - 1, 2**63 - 1)], [-1, 2**63, "1e3"]),
    (validate.positive_float, [(1e-3, 1e-3), ("0.1", 0.1), (3, 3.0)],
     [0, -1e-9, "nan", "inf", "-inf", "1e400", float("nan"), math.inf, "", "x", True, 10**400]),
    (validate.non_negative_float, [(0, 0.0), ("2.5", 2.5)], [-0.1, "nan", "inf"]),
])
def test_numbers(validator, good, bad):
    for value, expected in good:
        assert validator(value, "x") == expected
    for value in bad:
        with pytest.raises(OptionError, match="^x: expected"):
            validator(value, "x")


def test_fractions_by_interval():
    assert validate.fraction(0, "r", "[0, 1)") == 0.0
    assert validate.fraction("1", "r", "(0, 1]") == 1.0
    for interval, bad in [("[0, 1)", [1, -0.01, "nan"]), ("(0, 1)", [0, 1]), ("(0, 1]", [0, 1.01]),
                          ("[0, 1]", [-1e-12, 1.0000001, "inf"])]:
        for value in bad:
            with pytest.raises(OptionError, match="fraction in " + re.escape(interval)):
                validate.fraction(value, "r", interval)


def test_maxima_and_ranges():
    assert validate.positive_int(64, "c", maximum=64) == 64
    with pytest.raises(OptionError, match="up to 64"):
        validate.positive_int(65, "c", maximum=64)
    assert validate.int_between("7", "opset", 7, 20) == 7
    with pytest.raises(OptionError, match="from 7 to 20"):
        validate.int_between(21, "opset", 7, 20)


def test_names():
    assert validate.known_name("b", "m", names=["a", "b"]) == "b"
    assert validate.known_names("a,b", "m", names=lambda: ["a", "b"]) == ["a", "b"]
    with pytest.raises(OptionError, match="unknown method 'c'; use one of a, b"):
        validate.known_names(["a", "c"], "m", names=["a", "b"], kind="method")
    with pytest.raises(OptionError, match="one or more"):
        validate.known_names(",", "m", names=["a"])
    assert validate.identifier("layer1.0.conv1") == "layer1.0.conv1"
    for bad in ("", " ", "a b", "\x00"):
        with pytest.raises(OptionError):
            validate.identifier(bad)
    assert validate.class_selection("0, 3") == "0, 3"
    for bad in ("", "-1", "a", "1,,2", "1.5"):
        with pytest.raises(OptionError, match="'all' or class indices"):
            validate.class_selection(bad)


def test_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    assert validate.existing_file(tmp_path / "file") == tmp_path / "file"
    assert validate.existing_dir(str(tmp_path)) == tmp_path
    for validator, value, needle in [(validate.existing_file, tmp_path, "is a directory"),
                                     (validate.existing_file, tmp_path / "none", "no such file"),
                                     (validate.existing_dir, tmp_path / "file", "is a file"),
                                     (validate.existing_dir, tmp_path / "none", "no such directory"),
                                     (validate.existing_dir, "", "expected a path"),
                                     (validate.existing_file, "a\0b", "NUL")]:
        with pytest.raises(OptionError, match=needle):
            validator(value, "p")


def test_outputs_are_checked_without_creating_anything(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    assert validate.output_file(tmp_path / "new" / "deeper" / "out.json") == tmp_path / "new" / "deeper" / "out.json"
    assert validate.output_file(tmp_path / "file") == tmp_path / "file"  # replaced
    assert validate.output_dir(tmp_path / "dir") == tmp_path / "dir"
    assert validate.output_dir(tmp_path / "new-dir" / "x") == tmp_path / "new-dir" / "x"
    for validator, value, needle in [
            (validate.output_file, tmp_path / "file" / "out.json", "is a file, not a directory"),
            (validate.output_file, tmp_path / "file" / "a" / "b", "is a file, not a directory"),
            (validate.output_file, tmp_path / "dir", "is a directory"),
            (validate.output_dir, tmp_path / "file", "is a file"),
            (validate.output_dir, tmp_path / "file" / "sub", "is a file, not a directory"),
            (validate.output_file, tmp_path / ("n" * 300), "too long"),
            (validate.output_file, "", "expected a path")]:
        with pytest.raises(OptionError, match=needle):
            validator(value, "out")
    (tmp_path / "m.safetensors").mkdir()
    with pytest.raises(OptionError, match="is a directory"):  # the name the writer appends the suffix to
        validate.output_file(tmp_path / "m", "out", suffix=".safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file", "m.safetensors"]


# --------------------------------------------------------------------------------------------------
# the public API checks its arguments with the same rules, before any work


def test_train_config_refuses_what_the_cli_refuses():
    from neurotomy.train import TrainConfig

    assert TrainConfig(epochs="2", lr=0.05).epochs == 2
    for kwargs, needle in [({"epochs": 0}, "epochs"), ({"lr": -0.1}, "lr"), ({"lr": float("nan")}, "lr"),
                           ({"batch_size": 0}, "batch_size"), ({"momentum": 1.0}, "momentum"),
                           ({"schedule": "linear"}, "unknown schedule 'linear'"), ({"seed": -1}, "seed"),
                           ({"max_images": 0}, "max_images"), ({"grad_mask_q": 2.0}, "q must be in"),
                           ({"distill_alpha": 1.5}, "distill_alpha")]:
        with pytest.raises(NeurotomyError, match=needle):
            TrainConfig(**kwargs)


def test_evaluate_recalibrate_finetune_check_their_numbers():
    from neurotomy.data import load_dataset
    from neurotomy.models import build_model
    from neurotomy.recover import finetune, recalibrate_batchnorm
    from neurotomy.train import evaluate

    model, data = build_model("resnet20", 1, 10, 8), load_dataset("digits", split="test")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(OptionError, match="batch_size"):
        evaluate(model, data, batch_size=0)
    with pytest.raises(OptionError, match="max_images"):
        evaluate(model, data, max_images=-1)
    with pytest.raises(OptionError, match="images"):  # 0 images would reset every BatchNorm and measure none
        recalibrate_batchnorm(model, data, images=0)
    with pytest.raises(OptionError, match="lr"):
        finetune(model, data, epochs=1, lr=-1)
    with pytest.raises(OptionError, match="epochs"):
        finetune(model, data, epochs=-1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_prune_job_checks_every_setting_before_any_work():
    from neurotomy.jobs.prune import PruneJob
    from neurotomy.models import build_model

    model = build_model("lenet5", 1, 10, 8)
    for kwargs, needle in [({"ratio": 1.5}, "ratio"), ({"ratio": 0.3, "min_channels": 0}, "min_channels"),
                           ({"ratio": 0.3, "finetune_lr": 0.0}, "finetune_lr"), ({"ratio": 0.3, "steps": 0}, "steps"),
                           ({"ratio": 0.3, "recalibrate_images": -1}, "recalibrate_images"),
                           ({"ratio": 0.3, "scope": "local"}, "unknown scope 'local'"),
                           ({"ratio": 0.3, "criterion": "l7"}, "unknown criterion"),
                           ({"ratio": 0.3, "ignored_layers": ["nope"]}, "not in the model")]:
        with pytest.raises(NeurotomyError, match=needle):
            PruneJob(**kwargs)._validate(model)


def test_a_prune_that_would_remove_nothing_is_refused():
    from neurotomy.data import load_dataset
    from neurotomy.jobs.prune import PruneJob
    from neurotomy.loading import load_model

    data = load_dataset("digits", split="test")
    job = PruneJob(ratio=0.3, min_channels=10_000, measure_latency=False, quiet=True, recalibrate_images=64)
    with pytest.raises(PruningError, match="removes no channel"):
        job.run(load_model("zoo:lenet5-digits"), data, data)


def test_dissect_and_split_check_their_output_before_any_work(tmp_path):
    from neurotomy.data import load_dataset
    from neurotomy.jobs.classes import split_job
    from neurotomy.jobs.dissect import dissect
    from neurotomy.loading import load_model

    (tmp_path / "file").write_text("x")
    model, data = load_model("zoo:lenet5-digits"), load_dataset("digits", split="test")
    with pytest.raises(OptionError, match="is a file"):
        dissect(model, data, data, tmp_path / "file" / "report", budget="tiny", quiet=True)
    with pytest.raises(OptionError, match="is a file"):
        split_job(model, data, data, [1], tmp_path / "file", quiet=True)
    with pytest.raises(OptionError, match="tolerance"):
        split_job(model, data, data, [1], tmp_path / "modules", tolerance=0.0, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_attribute_refuses_empty_or_non_finite_inputs():
    from neurotomy.explain import ExplainError, attribute
    from neurotomy.models import build_model

    model = build_model("lenet5", 1, 10, 8)
    with pytest.raises(ExplainError, match="no image"):
        attribute(model, torch.zeros(0, 1, 8, 8))
    with pytest.raises(ExplainError, match="NaN"):
        attribute(model, torch.full((1, 1, 8, 8), float("nan")))
