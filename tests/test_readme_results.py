"""The README's results block is what benchmarks/readme_results.py writes from benchmarks/results/*.json."""

import json
import shutil
from pathlib import Path

import pytest

from tests.benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def readme_results():
    return load_benchmark("readme_results")


def test_readme_block_matches_the_results_json(readme_results):
    readme = (ROOT / "README.md").read_text()
    generated = readme_results.generate()
    assert readme_results.current_block(readme) == generated, (
        "README.md's results block differs from benchmarks/results/*.json: run `make results-readme` "
        "(or `python benchmarks/readme_results.py --check` for the diff)")


def test_a_changed_figure_makes_the_check_fail(readme_results, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results, ignore=shutil.ignore_patterns("*.png", "*.html"))
    before = readme_results.generate(results)
    path = results / "explanations.json"
    data = json.loads(path.read_text())
    data["gradcam_speedup"] = 1.5  # below the 2× target: the figure and the claim's verdict change
    path.write_text(json.dumps(data))
    after = readme_results.generate(results)
    assert after != before
    row = next(line for line in after.splitlines() if line.startswith("| our Grad-CAM vs pytorch-grad-cam"))
    assert "1.50× (" in row and row.endswith("| no |")  # the figure and the claim's verdict
    readme = (ROOT / "README.md").read_text()
    assert readme_results.current_block(readme) != after


def test_replace_block_keeps_the_prose_around_it(readme_results):
    text = f"intro\n{readme_results.BEGIN}\nold figures\n{readme_results.END}\noutro\n"
    block = f"{readme_results.BEGIN}\nnew\n{readme_results.END}"
    assert readme_results.replace_block(text, block) == f"intro\n{block}\noutro\n"
    with pytest.raises(SystemExit):
        readme_results.replace_block("no markers here", block)


def test_load_phrase_says_when_a_load_was_not_measured(readme_results):
    measured = {"load_average_start": [0.4, 0.5, 0.6], "load_average_end": [0.7, 0.5, 0.6]}
    legacy = {"load_average_start": None, "load_average_end": None}
    assert readme_results.load_phrase([measured]) == "load 0.4–0.7"
    assert readme_results.load_phrase([measured, legacy]) == "load not recorded"


def test_layer_pruning_is_reported_only_at_block_counts_with_every_random_draw(readme_results, tmp_path):
    """A block count enters the README once its random baseline has ≥ 5 draws; a model without one is named
    as not measured, and the claim's verdict follows the summary rows."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results, ignore=shutil.ignore_patterns("*.png", "*.html"))
    path = results / "layer_dynamics.json"
    data = json.loads(path.read_text())
    row = {"modularity": 0.95, "last": 0.94, "cka": 0.93, "random_mean": 0.93, "random_sd": 0.004,
           "random_min": 0.925, "random_max": 0.935, "modularity_beats_random": True, "modularity_beats_last": True}
    data["layer_pruning"] = [{"finetune_epochs": 3}]
    data["summary"] = {"vgg16-fmnist": {"rows": [{**row, "blocks_count": 1, "random_draws": 5},
                                                 {**row, "blocks_count": 2, "random_draws": 2}]}}
    path.write_text(json.dumps(data))
    block = readme_results.generate(results)
    prose = " ".join(block.split())  # the bullets are wrapped
    assert "VGG-16 — 1 block(s): modularity 95.00 %, last 94.00 %, CKA 93.00 %, random 93.00 ± 0.40 % (5 draws)" in prose
    assert "2 block(s)" not in prose  # two draws of five: not reported yet
    row_line = next(line for line in block.splitlines() if line.startswith("| removing blocks by modularity"))
    assert "VGG-16: held at 1 of 1 block counts (1)" in row_line and "not measured on" in row_line
    assert row_line.endswith("| in part (partial run) |")  # held where measured, but not on every model


def test_a_model_with_a_block_count_still_running_is_a_partial_run(readme_results, tmp_path):
    """Every model measured at a judged count, but one has records past it (its next count is running):
    the bullet and the claim say so, and the verdict stays a partial one."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results, ignore=shutil.ignore_patterns("*.png", "*.html"))
    path = results / "layer_dynamics.json"
    data = json.loads(path.read_text())
    row = {"modularity": 0.95, "last": 0.94, "cka": 0.93, "random_mean": 0.93, "random_sd": 0.004,
           "random_min": 0.925, "random_max": 0.935, "modularity_beats_random": True, "modularity_beats_last": True,
           "blocks_count": 1, "random_draws": 5}
    data["summary"] = {name: {"rows": [row]} for name in data["curve"]}
    data["layer_pruning"] = [{"model": name, "blocks_count": 1, "finetune_epochs": 3} for name in data["curve"]]
    path.write_text(json.dumps(data))
    row_line = next(line for line in readme_results.generate(results).splitlines()
                    if line.startswith("| removing blocks by modularity"))
    assert row_line.endswith("| yes |") and "still running" not in row_line
    data["layer_pruning"].append({"model": "resnet56-fmnist", "blocks_count": 2, "finetune_epochs": 3})
    path.write_text(json.dumps(data))
    block = readme_results.generate(results)
    row_line = next(line for line in block.splitlines() if line.startswith("| removing blocks by modularity"))
    assert "larger counts still running on ResNet-56" in row_line and row_line.endswith("| yes (partial run) |")
    assert "Larger block counts still running on ResNet-56." in " ".join(block.split())


def test_a_recipe_run_is_stated_with_its_own_figures(readme_results, tmp_path):
    """pruning_budget_recipes/NAME: its fine-tune recipe and, per MACs target, both methods' accuracies."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results, ignore=shutil.ignore_patterns("*.png", "*.html"))
    recipe = json.loads((results / "pruning_budget_recipes" / "distill" / "pruning_budget.json").read_text())
    recipe["settings"]["finetune"]["lr"] = 0.02
    recipe["settings"]["finetune"]["batch"] = 64
    recipe["summary"]["macs_targets"]["0.85"]["ours_best"]["acc_finetuned"] = 0.9321
    recipe["summary"]["macs_targets"]["0.85"]["ours_loss_pts"] = 1.44
    (results / "pruning_budget_recipes" / "lr0.02").mkdir()
    (results / "pruning_budget_recipes" / "lr0.02" / "pruning_budget.json").write_text(json.dumps(recipe))
    sentence = readme_results.recipes_sentence(readme_results.load_results(results)["pruning_budget_recipes"])
    assert ("`lr0.02` at −85 % MACs, lr 0.02, batch 64, distilled from the unpruned model (KL at T 4, weight 0.5): "
            "ours 93.21 % (−1.44 pt)") in sentence
    assert readme_results.recipes_sentence({}) == ""


def recipe_run(seed: int, loss: float, lr: float = 0.01) -> dict:
    """A pruning_budget_recipes results file, reduced to what recipe_claim reads."""
    return {"settings": {"seed": seed, "finetune": {"lr": lr}},
            "summary": {"macs_targets": {"0.85": {"ours_loss_pts": loss}}}}


def claim_rows(readme_results, recipes: dict) -> list[tuple[str, str]]:
    """recipe_claim's (ours, held) for ``recipes``."""
    rows = []

    def verdict(all_held, some_held=False):
        return "yes" if all_held else ("in part" if some_held else "no")

    readme_results.recipe_claim(recipes, lambda text, source, target, ours, held: rows.append((ours, held)), verdict)
    return rows


def test_the_best_recipe_is_judged_on_the_mean_over_its_seeds(readme_results):
    """The best recipe is picked on the test set, so one lucky seed below 1.5 pt is 'in part'; the
    verdict is the mean over the seeds that recipe ran with."""
    run = recipe_run
    # b's single seed is lower still, but only recipes run with the most seeds compete
    assert claim_rows(readme_results, {"a": run(0, 1.45), "a_seed1": run(1, 1.75), "b": run(0, 1.4, lr=0.02)}) == [
        ("`a` (best by its mean of 2 recipes in 3 runs, chosen on the test set): seed 0: 1.45 pt, seed 1: 1.75 pt; "
         "mean 1.60 pt, sd 0.21", "in part")]
    # of two recipes with two seeds each, the lower mean wins, not the luckier seed; the other is named
    assert claim_rows(readme_results, {"a": run(0, 1.45), "a_seed1": run(1, 1.75), "c": run(0, 1.56, lr=0.005),
                                       "c_seed1": run(1, 1.54, lr=0.005)}) == [
        ("`c` (best by its mean of 2 recipes in 4 runs, chosen on the test set): seed 0: 1.56 pt, seed 1: 1.54 pt; "
         "mean 1.55 pt, sd 0.01 (also with 2 seeds: `a`: mean 1.60 pt)", "no")]
    assert claim_rows(readme_results, {"a": run(0, 1.45), "a_seed1": run(1, 1.35)})[0][1] == "yes"
    assert claim_rows(readme_results, {}) == []


def test_held_out_seeds_of_the_chosen_recipe_are_stated_apart_and_count_in_the_verdict(readme_results):
    """Runs named ``…_heldout`` were made after the choice: they cannot win it, and they can lose it."""
    run = recipe_run
    runs = {"a": run(0, 1.45), "a_seed1": run(1, 1.45), "c": run(0, 1.56, lr=0.005), "c_seed1": run(1, 1.54, lr=0.005),
            # a lucky held-out run of the losing recipe takes no part
            "c_seed2_heldout": run(2, 0.5, lr=0.005),
            "a_seed2_heldout": run(2, 1.7), "a_seed3_heldout": run(3, 1.6)}
    assert claim_rows(readme_results, runs) == [
        ("`a` (best by its mean of 2 recipes in 4 runs, chosen on the test set): seed 0: 1.45 pt, seed 1: 1.45 pt; "
         "mean 1.45 pt, sd 0.00; fresh seeds run after the choice: seed 2: 1.70 pt, seed 3: 1.60 pt; mean over all 4 "
         "seeds 1.55 pt, sd 0.12 (also with 2 seeds: `c`: mean 1.55 pt)", "in part")]


def test_the_criterion_screen_claim_says_which_accuracies_it_pairs_and_holds_only_where_rho_is_high(readme_results):
    """Spearman groups of the budget summary: recalibrated (no label), after a refit (+reconstruct), and a
    criterion's reconstructed cut against its plain cut fine-tuned; 'yes' only when every group is ≥ 0.7."""
    def group(rho, **kw):
        return {"target": "macs0.85", "scope": "uniform", "reconstruct": False, "rho": rho, "n": 6,
                "criteria": ["l1", "chip", "random"], **kw}

    def claimed(groups):
        rows = []
        summary = {"macs_targets": {}, "loss_at_85_pts": {"value": None}, "reconstruct_only": {},
                   "speedup_targets": {}, "spearman": groups}
        readme_results.budget_claims({"summary": summary}, lambda text, source, target, ours, held:
                                     rows.append((ours, held)), lambda *a: "unused")
        return rows

    [(text, held)] = claimed([group(-0.43), group(0.6, x_from="the /rec record"), group(0.8, reconstruct=True)])
    assert "−85 % uniform: ρ -0.43 over 6 criteria (l1, chip, random)" in text
    assert "uniform reconstructed cut → plain cut fine-tuned: ρ 0.60" in text and "uniform +reconstruct: ρ 0.80" in text
    assert held.startswith("in part")
    assert claimed([group(0.75), group(0.9, x_from="x")])[0][1] == "yes"
    assert claimed([group(-0.2), group(0.3, x_from="x")])[0][1] == "weakly"
    assert claimed([group(-0.2)])[0][1] == "no"
    assert claimed([group(0.9, target="speedup2")]) == []  # speed-up groups are not stated


def test_the_calibration_claim_holds_only_when_every_retimed_cut_is_within_ten_percent(readme_results):
    """latency_calibration.json: each re-timed cut against its target, both predictors' errors, and 'yes'
    only when all re-timed cuts landed within ±10 %."""
    calibration = load_benchmark("latency_calibration")
    stamp = {"load_average_start": [0.3, 0.3, 0.3], "load_average_end": [0.4, 0.3, 0.3], "git_commit": "x"}

    def record(target, retimed, predicted=2.0, one_point=1.7, measured=2.1):
        return {"model": "zoo:resnet20-fmnist", "criterion": "l1", "target_speedup": target, "speedup_batch64": retimed,
                "speedup_predicted_first": predicted, "speedup_predicted_one_point": one_point,
                "speedup_measured_first": measured, "attempts": [{}], "provenance": stamp}

    def claimed(records):
        rows = []
        readme_results.calibration_claim({"records": records, "summary": calibration.summarize(records)},
                                         lambda text, source, target, ours, held: rows.append((ours, held)),
                                         lambda all_held, some=False: "yes" if all_held else "in part" if some else "no")
        return rows

    [(text, held)] = claimed([record(2.0, 2.05), record(3.0, 3.5)])
    assert "ResNet-20 l1 2.00×: 2.05×" in text and "1 of 2 within ±10 %" in text and "load 0.3–0.4" in text
    assert "4.8 %" in text and "19.0 %" in text  # |2.0/2.1 − 1| calibrated, |1.7/2.1 − 1| one-point
    assert held == "in part"
    assert claimed([record(2.0, 2.05)])[0][1] == "yes"
    refused = {"model": "zoo:resnet20-fmnist", "criterion": "l1", "target_speedup": 3.0, "refused": "out of reach"}
    [(text, held)] = claimed([record(2.0, 2.05), refused])
    assert "1 of 1 within ±10 %, 1 refused as out of reach" in text and held == "in part"
    assert claimed([record(2.0, 2.5)])[0][1] == "no"
