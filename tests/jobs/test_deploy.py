"""The deploy job: files written all or nothing, accuracy and maps of the ONNX files checked against
onnxruntime and PyTorch run by hand, refusals with their numbers."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from neurotomy.errors import DataError, WorseResultError
from neurotomy.explain import attribute
from neurotomy.models import build_model

pytest.importorskip("onnxruntime")

from neurotomy.explain.perturbation import occlusion_maps, rise_maps  # noqa: E402
from neurotomy.jobs.deploy import deploy, deployment_figures  # noqa: E402
from neurotomy.quantize import onnx_session, session_logits  # noqa: E402
from neurotomy.train import evaluate  # noqa: E402

CHEAP = {"calibration_images": 64, "reason_images": 10, "rounds": 2, "quiet": True}


@pytest.fixture(scope="module")
def deployed(lenet_digits, tmp_path_factory):
    model, train, test = lenet_digits
    out = tmp_path_factory.mktemp("deploy") / "out"
    return out, deploy(model, out, train, test, int8=True, **CHEAP)


def test_deploy_writes_the_files_and_the_record(deployed):
    out, record = deployed
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.int8.onnx", "model.onnx"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert json.loads((out / "deploy.json").read_text())["rows"] == json.loads(json.dumps(record["rows"]))
    rows = {r["format"]: r for r in record["rows"]}
    assert list(rows) == ["torch", "onnx-fp32", "onnx-int8"]
    for fmt, name in (("onnx-fp32", "model.onnx"), ("onnx-int8", "model.int8.onnx")):
        assert rows[fmt]["path"] == str(out / name) and rows[fmt]["bytes"] == (out / name).stat().st_size
    assert rows["onnx-int8"]["bytes"] < 0.5 * rows["onnx-fp32"]["bytes"]
    for row in rows.values():
        assert row["latency_batch1_ms"] > 0 and row["latency_batch64_ms"] > 0 and row["threads"] == 1
        assert len(row["load_average"]) == 2
    assert rows["torch"]["reasons_spearman"] is None  # the reference
    assert rows["onnx-fp32"]["reasons_spearman"]["occlusion"] > 0.999
    assert rows["onnx-int8"]["reasons_spearman"]["occlusion"] > 0.9
    int8_vs_fp32 = next(r for r in record["reasons"] if r["against"] == {"model": "model", "format": "onnx-fp32"})
    assert set(int8_vs_fp32["methods"]) == {"occlusion", "rise"}
    # one image of each class, explained for the reference's predicted class: per_class is keyed by those
    # predictions, which name (almost) every class for a model this accurate, one image per prediction
    targets = record["reason_targets"]
    per_class = int8_vs_fp32["methods"]["rise"]["per_class"]
    assert len(targets) == CHEAP["reason_images"] and len(set(targets)) >= 8
    assert {cls: entry["n"] for cls, entry in per_class.items()} == {c: targets.count(c) for c in set(targets)}


def test_onnx_accuracy_matches_onnxruntime_run_by_hand(deployed, lenet_digits):
    out, record = deployed
    model, _, test = lenet_digits
    rows = {r["format"]: r for r in record["rows"]}
    for fmt, name in (("onnx-fp32", "model.onnx"), ("onnx-int8", "model.int8.onnx")):
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        predicted = session.run(None, {"images": test.images.numpy()})[0].argmax(1)
        assert rows[fmt]["accuracy"] == pytest.approx(float((predicted == test.targets.numpy()).mean()))
    with torch.no_grad():
        assert rows["torch"]["accuracy"] == pytest.approx(float((model(test.images).argmax(1) == test.targets)
                                                                .float().mean()))


def test_maps_through_onnxruntime_match_the_pytorch_maps(deployed, lenet_digits):
    out, _ = deployed
    model, _, test = lenet_digits
    images = test.images[:3]
    targets = model(images).argmax(1)
    f = session_logits(onnx_session(out / "model.onnx", threads=1))
    torch.testing.assert_close(occlusion_maps(f, images, targets),
                               attribute(model, images, targets, method="occlusion"), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rise_maps(f, images, targets, masks=200),
                               attribute(model, images, targets, method="rise", masks=200), atol=1e-5, rtol=1e-4)
    int8 = rise_maps(session_logits(onnx_session(out / "model.int8.onnx", threads=1)), images, targets, masks=200)
    assert not torch.allclose(int8, rise_maps(f, images, targets, masks=200))  # int8 really ran


def test_an_int8_model_that_loses_accuracy_is_refused(lenet_digits, tmp_path):
    model, train, test = lenet_digits
    out = tmp_path / "out"
    # one calibration image: ranges too narrow, so int8 loses accuracy on the digits
    with pytest.raises(WorseResultError) as refused:
        deploy(model, out, train, test, int8=True, calibration_images=1, max_drop=0.1, reason_images=0, rounds=1,
               quiet=True)
    found = re.search(r"int8 accuracy (\d+\.\d\d)% is (\d+\.\d\d) pt below the fp32 ONNX model's (\d+\.\d\d)% "
                      r"\(more than --max-drop 0\.1\)", str(refused.value))
    int8, drop, fp32 = map(float, found.groups())
    assert drop > 0.1 and drop == pytest.approx(fp32 - int8, abs=0.011)
    assert fp32 == pytest.approx(100 * evaluate(model, test, quiet=True)["accuracy"], abs=0.006)  # ONNX = PyTorch
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary folder left


def test_data_that_does_not_fit_is_refused_before_any_work(lenet_digits, tmp_path):
    from neurotomy.data import load_dataset

    model, train, test = lenet_digits
    fmnist = load_dataset("fashion-mnist", split="test")
    with pytest.raises(DataError, match="images are 28×28 but the model was trained on 8×8 and does not run on them"):
        deploy(model, tmp_path / "out", train, fmnist, quiet=True)
    with pytest.raises(DataError, match="the data has 10 classes but the model has 3"):
        deploy(build_model("lenet5", 1, 3, 8), tmp_path / "out", train, test, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_several_models_are_timed_together_against_the_first(lenet_digits, tmp_path):
    from neurotomy.jobs.prune import PruneJob

    model, train, test = lenet_digits
    pruned, _ = PruneJob(criterion="l1", target_macs=0.3, measure_latency=False, quiet=True,
                         recalibrate_images=256).run(model, train, test)
    record = deployment_figures({"lenet": model, "lenet −30 %": pruned}, train, test, tmp_path, int8=False,
                                reason_images=10, methods=["occlusion"], rounds=1, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-0.onnx", "model-1.onnx"]
    assert [(r["model"], r["format"]) for r in record["rows"]] == [
        ("lenet", "torch"), ("lenet", "onnx-fp32"), ("lenet −30 %", "torch"), ("lenet −30 %", "onnx-fp32")]
    pruned_torch = record["rows"][2]
    assert 0 < pruned_torch["reasons_spearman"]["occlusion"] < 0.999  # another model: other maps
    assert pruned_torch["speedup_batch64_vs_torch"] == pytest.approx(
        record["rows"][0]["latency_batch64_ms"] / pruned_torch["latency_batch64_ms"])
    assert np.isclose(record["rows"][0]["speedup_batch64_vs_torch"], 1.0)


def test_without_int8_a_stale_int8_file_is_removed(deployed, lenet_digits, tmp_path):
    out, _ = deployed
    model, train, test = lenet_digits
    again = tmp_path / "again"
    again.mkdir()
    (again / "model.int8.onnx").write_bytes((out / "model.int8.onnx").read_bytes())
    (again / "notes.txt").write_text("mine")
    record = deploy(model, again, train, test, reason_images=0, rounds=1, quiet=True)
    assert sorted(p.name for p in again.iterdir()) == ["deploy.json", "model.onnx", "notes.txt"]
    assert [r["format"] for r in record["rows"]] == ["torch", "onnx-fp32"]


def test_a_vit_deploys_in_int8_and_a_lossy_int8_is_refused(vit_digits, tmp_path):
    from neurotomy.models.transformer import is_transformer

    model, train, test = vit_digits
    assert is_transformer(model)
    record = deploy(model, tmp_path / "vit", train, test, int8=True, calibration_images=64, reason_images=6,
                    methods=["occlusion"], rounds=1, quiet=True)
    rows = {r["format"]: r for r in record["rows"]}
    assert record["files"]["model"]["onnx-int8"]["quantized_ops"] == {"Conv": 1, "Gemm": 1, "MatMul": 8}
    # measured 0–0.3 pt below fp32 over three calibration draws; the default --max-drop is 1 pt
    assert rows["onnx-fp32"]["accuracy"] - rows["onnx-int8"]["accuracy"] <= 0.01
    assert rows["onnx-int8"]["bytes"] < rows["onnx-fp32"]["bytes"]
    assert 0.95 < rows["onnx-int8"]["reasons_spearman"]["occlusion"] < rows["onnx-fp32"]["reasons_spearman"]["occlusion"]
    # the int8 file's accuracy, by hand in onnxruntime
    logits = session_logits(onnx_session(tmp_path / "vit" / "model.int8.onnx", threads=1))(test.images)
    assert rows["onnx-int8"]["accuracy"] == pytest.approx(float((logits.argmax(1) == test.targets.numpy()).mean()))
    # one calibration image (this draw): ranges too narrow, more than half a point lost — refused, nothing written
    with pytest.raises(WorseResultError, match=r"int8 accuracy .* pt below the fp32 ONNX model's .*--max-drop 0\.5"):
        deploy(model, tmp_path / "lossy", train, test, int8=True, calibration_images=1, max_drop=0.5, seed=2,
               reason_images=0, rounds=1, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vit"]


def test_every_deployment_session_states_its_threads(lenet_digits, tmp_path, monkeypatch):
    """Timed sessions run the deployment's threads, the sessions measuring accuracy and maps PyTorch's own."""
    import neurotomy.jobs.deploy as job
    from neurotomy.timing import torch_threads

    model, train, test = lenet_digits
    made, real = [], job.onnx_session

    def spy(path, threads):
        session = real(path, threads)
        made.append((Path(path).name, session.get_session_options().intra_op_num_threads))
        return session
    monkeypatch.setattr(job, "onnx_session", spy)
    with torch_threads(3):
        record = deployment_figures({"m": model}, train, test, tmp_path, int8=True, threads=2, calibration_images=16,
                                    reason_images=0, latency_batch=2, rounds=1, quiet=True)
    assert sorted(made) == [("model.int8.onnx", 2), ("model.int8.onnx", 3), ("model.onnx", 2), ("model.onnx", 3)]
    assert record["settings"]["compute_threads"] == 3 and record["timing"]["threads"] == 2
