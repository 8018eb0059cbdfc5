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
