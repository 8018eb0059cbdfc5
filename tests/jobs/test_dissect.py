import json

import pytest

from neurotomy.data import load_dataset
from neurotomy.errors import NeurotomyError
from neurotomy.loading import load_model
from neurotomy.jobs.dissect import dissect
from neurotomy.jobs.dissect_stages import deployment_available

DEPLOY = deployment_available()  # the tiny budget deploys only when asked (it times nothing else)
SECTIONS = ["layers", "scores", "pruning", *(["deployment"] if DEPLOY else []), "dynamics",
            "directions", "class_subsets", "explanations", "run"]
TIMED_KEYS = ("speedup", "load_average")  # numbers that are timings (or the load while timing): they vary by run


def _numbers(report, section_id):
    sec = next(s for s in report["sections"] if s["id"] == section_id)
    return {n["key"]: n["value"] for n in sec["numbers"]}


def test_report_files_and_sections(tiny_report_dir, tiny_report):
    assert sorted(p.name for p in tiny_report_dir.iterdir()) == ["pruned.safetensors", "report.html", "report.json"]
    assert [s["id"] for s in tiny_report["sections"]] == SECTIONS
    for sec in tiny_report["sections"]:
        assert sec["title"] and (sec["numbers"] or sec["tables"]), sec["id"]
    assert tiny_report["budget"]["name"] == "tiny" and tiny_report["train_images"] <= 300


def test_the_report_carries_its_provenance_stamp(tiny_report):
    """Which code made the report, when, and the measured load while it ran — in the JSON and in the run
    section's text (issue #17: "idle" is a measured load, never a label)."""
    import subprocess

    stamp = tiny_report["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert stamp["git_commit"] in (head, None)  # None outside a git checkout
    assert len(stamp["load_average_start"]) == 3 and len(stamp["load_average_end"]) == 3
    assert stamp["threads"] == tiny_report["machine"]["torch_threads"]
    run = next(s for s in tiny_report["sections"] if s["id"] == "run")
    assert f"load average {stamp['load_average_start'][0]:.2f} at the start" in run["text"]


def test_numbers_agree_across_sections_and_with_the_checkpoint(tiny_report_dir, tiny_report):
    layers, pruning = _numbers(tiny_report, "layers"), _numbers(tiny_report, "pruning")
    # the layer table and the prune record count parameters independently
    assert pruning["params_ratio"] == pytest.approx(layers["params_original"] / layers["params_pruned"])
    assert pruning["macs_reduction"] == pytest.approx(1 - layers["macs_pruned"] / layers["macs_original"])
    assert abs(pruning["macs_reduction"] - 0.5) <= 0.05  # LeNet-5's 6 and 16 channels make the steps coarse
    pruned = load_model(tiny_report_dir / "pruned.safetensors")
    assert sum(p.numel() for p in pruned.parameters()) == layers["params_pruned"]
    from neurotomy.train import evaluate
    test = load_dataset("digits", split="test")
    stages = next(s for s in tiny_report["sections"] if s["id"] == "pruning")["tables"][0]["rows"]
    assert stages[0][1] + pruning["accuracy_change"] == pytest.approx(stages[-1][1])  # original + change = final
    from neurotomy.data.subsets import balanced_subset
    subset = balanced_subset(test, tiny_report["test_images"], tiny_report["seed"])
    assert evaluate(pruned, subset, quiet=True)["accuracy"] == pytest.approx(stages[-1][1])


def test_scores_section_agreement_is_spearman_of_the_criteria(tiny_report):
    from neurotomy.scores import get_criterion

    sec = next(s for s in tiny_report["sections"] if s["id"] == "scores")
    names = [row[0] for row in sec["tables"][0]["rows"]]
    matrix = {row[0]: dict(zip(names, row[1:])) for row in sec["tables"][1]["rows"]}
    model = load_model("zoo:lenet5-digits")
    l1, fpgm = get_criterion("l1")(model), get_criterion("fpgm")(model)
    assert matrix["l1"]["fpgm"] == pytest.approx(l1.rank_correlation(fpgm)["mean"])
    assert matrix["fpgm"]["l1"] == matrix["l1"]["fpgm"] and matrix["l1"]["l1"] == 1.0


def test_same_seed_same_report(tiny_report):
    again = dissect(load_model("zoo:lenet5-digits"), load_dataset("digits"), load_dataset("digits", split="test"),
                    budget="tiny", seed=0, quiet=True, model_name="zoo:lenet5-digits", deploy=DEPLOY)
    again = json.loads(json.dumps(again))

    def measured(report):  # everything but wall-clock times
        out = []
        for sec in report["sections"]:
            if sec["id"] == "run":
                continue
            timed = {"seconds"} | {n["key"] for n in sec["numbers"] if n["key"].startswith(TIMED_KEYS)}
            out.append(([n for n in sec["numbers"] if n["key"] not in timed],
                        [[[v for v, c in zip(r, t["columns"]) if c["format"] not in ("seconds", "ms")]
                          for r in t["rows"]] for t in sec["tables"]],
                        [f["png_base64"] for f in sec["figures"] if "latency" not in f["title"]]))
        return out
    assert measured(again) == measured(tiny_report)


def test_bad_requests_fail_before_any_work(tmp_path):
    model, data = load_model("zoo:lenet5-digits"), load_dataset("digits")
    with pytest.raises(NeurotomyError, match="between 0 and 1"):
        dissect(model, data, data, tmp_path, budget="tiny", target_macs=1.5, quiet=True)
    with pytest.raises(NeurotomyError, match="unknown criterion"):
        dissect(model, data, data, tmp_path, budget="tiny", criterion="l7", quiet=True)
    with pytest.raises(NeurotomyError, match="positive number of minutes"):
        dissect(model, data, data, tmp_path, budget="soon", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_render_leaves_no_partial_html(tmp_path, monkeypatch, tiny_report):
    import neurotomy.report.html as html

    def broken(report):
        raise RuntimeError("render failed")
    monkeypatch.setattr(html, "render_html", broken)
    with pytest.raises(RuntimeError):
        html.write_report(tiny_report, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["report.json"]  # complete JSON, no HTML, no temporary file


def _without_timings(value):
    """The report as two runs of the same dissection must agree on it: no timings (nor numbers, verdict
    items and figures made of them: speed-ups, the load while timing, latency plots), no machine, no
    checkpoint sizes (a checkpoint's metadata holds the prune's timings, so its size varies by a few bytes), no
    provenance stamp (its date and load)."""
    if isinstance(value, dict) and "columns" in value and "rows" in value:  # a table: drop its timing columns
        timed = [i for i, c in enumerate(value["columns"]) if c.get("format") in ("seconds", "ms", "mb")]
        rows = [[x for i, x in enumerate(row) if i not in timed] for row in value["rows"]]
        return {**_without_timings({k: v for k, v in value.items() if k != "rows"}), "rows": rows}
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if "seconds" not in k and k not in ("machine", "files", "provenance") and value.get("id") != "run"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value if not (isinstance(v, dict) and (
            v.get("id") == "run" or str(v.get("key", "")).startswith(TIMED_KEYS)
            or "latency" in str(v.get("title", ""))))]
    return value


def test_an_interrupted_dissection_resumes_to_the_same_report(tiny_report, tmp_path, monkeypatch):
    import neurotomy.jobs.dissect as job
    from neurotomy.run_state import RunState

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    model, train, test = load_model("zoo:lenet5-digits"), load_dataset("digits"), load_dataset("digits", split="test")
    out = tmp_path / "dissect"
    run = dict(out_dir=out, budget="tiny", seed=0, quiet=True, model_name="zoo:lenet5-digits", deploy=DEPLOY)
    subset_records = job.subset_records
    monkeypatch.setattr(job, "subset_records", killed)
    with pytest.raises(RuntimeError), RunState.beside(out) as state:
        dissect(model, train, test, **run, state=state)
    monkeypatch.setattr(job, "subset_records", subset_records)
    monkeypatch.setattr(job, "dynamics_records", killed)  # a finished stage is loaded, not rerun
    with RunState.beside(out, resume=True) as state:
        dissect(model, train, test, **run, state=state)
    assert not state.path.exists()
    resumed = json.loads((out / "report.json").read_text())
    assert _without_timings(resumed) == _without_timings(tiny_report)


# ------------------------------------------------------------------------------------------------
# a Vision Transformer: every stage works on it or is replaced by its transformer counterpart

VIT_SECTIONS = ["layers", "scores", "pruning", *(["deployment"] if DEPLOY else []), "dynamics",
                "transformer", "directions", "class_subsets", "explanations", "run"]


@pytest.fixture(scope="module")
def vit_report_dir(vit_digits, tmp_path_factory):
    from tests.crosscheck import one_thread

    model, train, test = vit_digits
    out = tmp_path_factory.mktemp("vit-dissect")
    with one_thread():
        dissect(model, train, test, out_dir=out, budget="tiny", seed=0, quiet=True, model_name="vit", deploy=DEPLOY)
    return out


def test_a_vit_gets_the_full_report_with_its_heads_and_neurons(vit_report_dir):
    from neurotomy.models.transformer import attention_sites, mlp_sites

    report = json.loads((vit_report_dir / "report.json").read_text())
    assert [s["id"] for s in report["sections"]] == VIT_SECTIONS
    for sec in report["sections"]:
        assert sec["numbers"] or sec["tables"], (sec["id"], sec["text"])
    assert "report.html" in {p.name for p in vit_report_dir.iterdir()}
    # the scores and the prune are the transformer's: heads and MLP neurons
    assert {row[0] for row in report["sections"][1]["tables"][0]["rows"]} == {"l1", "l2", "taylor", "mean_activation"}
    transformer = _numbers(report, "transformer")
    pruned = load_model(vit_report_dir / "pruned.safetensors")
    assert transformer["heads_pruned"] == sum(s.num_heads for s in attention_sites(pruned))
    assert transformer["neurons_pruned"] == sum(s.hidden for s in mlp_sites(pruned))
    assert (transformer["heads_original"], transformer["neurons_original"]) == (4, 64)
    assert transformer["heads_pruned"] + transformer["neurons_pruned"] < 4 + 64
    pruning = next(s for s in report["sections"] if s["id"] == "pruning")  # LayerNorm: nothing to recalibrate
    assert "no recalibration" in pruning["text"] and "BatchNorm" not in json.dumps(pruning["tables"])
    # explanations add attention rollout; directions look where the last block enters the classifier
    methods = [row[0] for row in next(s for s in report["sections"] if s["id"] == "explanations")["tables"][0]["rows"]]
    assert methods == ["gradcam", "gradient", "pathway", "rollout"]
    directions = next(s for s in report["sections"] if s["id"] == "directions")
    assert directions["text"].startswith("Layer norm.") and len(directions["figures"]) == 6
    if DEPLOY:  # a transformer's matrix products in int8, the class token and position embedding in float
        deployment = _numbers(report, "deployment")
        assert deployment["deployed_as"] == "pruned + int8"
        assert report["verdict"]["items"][-1]["key"] == "speedup_deployed"


def test_an_interrupted_vit_dissection_resumes_to_the_same_report(vit_digits, vit_report_dir, tmp_path, monkeypatch):
    import neurotomy.jobs.dissect as job
    from neurotomy.run_state import RunState
    from tests.crosscheck import one_thread

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    model, train, test = vit_digits
    out = tmp_path / "dissect"
    run = dict(out_dir=out, budget="tiny", seed=0, quiet=True, model_name="vit", deploy=DEPLOY)
    subset_records = job.subset_records
    monkeypatch.setattr(job, "subset_records", killed)
    with one_thread():
        with pytest.raises(RuntimeError), RunState.beside(out) as state:
            dissect(model, train, test, **run, state=state)
        monkeypatch.setattr(job, "subset_records", subset_records)
        monkeypatch.setattr(job, "transformer_records", killed)  # a finished stage is loaded, not rerun
        with RunState.beside(out, resume=True) as state:
            dissect(model, train, test, **run, state=state)
    resumed = json.loads((out / "report.json").read_text())
    assert _without_timings(resumed) == _without_timings(json.loads((vit_report_dir / "report.json").read_text()))
