"""Directions and concepts jobs (neurotomy.jobs.concepts): reference images against a brute-force
ranking, the files of the concepts job, and the direction comparison's guarantees."""

import json
from pathlib import Path

import pytest

from neurotomy.errors import ModelError, OptionError
from neurotomy.explain.crp import channel_relevance
from neurotomy.jobs.concepts import (accuracy_kept, compare_directions, concepts_job, directions_and_concepts,
                                     reference_images)
from neurotomy.scores.subspace import observe_layer


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread per test


def test_reference_images_are_the_most_relevant_ones(lenet, digits_test):
    refs = reference_images(lenet, digits_test, "features.4", [1, 7], n_reference=5, batch_size=50, quiet=True)
    # brute force: every test image's channel relevance at once, sorted
    everything = channel_relevance(lenet, digits_test.images.float(), "features.4", digits_test.targets)
    for channel in (1, 7):
        record = refs["channels"][channel]
        expected = everything[:, channel].double().topk(5)
        assert record["indices"] == expected.indices.tolist()
        assert record["relevance"] == pytest.approx(expected.values.tolist(), rel=1e-5)
        assert record["labels"] == digits_test.targets[expected.indices].tolist()
        assert sum(record["class_counts"].values()) == 5
    assert refs["images"] == len(digits_test)
    with pytest.raises(OptionError, match="channel 16 does not exist"):
        reference_images(lenet, digits_test, "features.4", [16], quiet=True)
    with pytest.raises(ModelError, match="no layer 'features.9'"):
        reference_images(lenet, digits_test, "features.9", [0], quiet=True)


def test_concepts_job_writes_a_grid_and_a_record(lenet, digits_test, tmp_path):
    record = concepts_job(lenet, digits_test, "features.4", [0, 5], tmp_path / "out", n_reference=3, quiet=True,
                          model_name="zoo:lenet5-digits")
    saved = json.loads((tmp_path / "out" / "concepts.json").read_text())
    assert saved["channels"]["5"]["indices"] == record["channels"]["5"]["indices"] and len(saved["channels"]) == 2
    assert (tmp_path / "out" / "concepts.png").read_bytes()[:4] == b"\x89PNG"
    default = concepts_job(lenet, digits_test, None, None, tmp_path / "default", n_reference=2, quiet=True)
    assert default["layer"] == "features.3" and len(default["channels"]) == 4


def test_compare_directions_on_the_fit_data(lenet, digits_test):
    stats = observe_layer(lenet, digits_test, "features.4", max_images=120, quiet=True)
    result = compare_directions(lenet, stats, stats, digits_test, ks=[1, 4, 16], eval_images=None)
    # on the data they were fitted on, PRCA's k directions capture the most relevance, PCA's the most variance
    for i in range(3):
        assert result["prca"]["relevance_captured"][i] >= result["pca"]["relevance_captured"][i] - 1e-9
        assert result["pca"]["variance_captured"][i] >= result["prca"]["variance_captured"][i] - 1e-9
    # all 16 directions: the layer unchanged
    assert result["prca"]["relevance_captured"][-1] == pytest.approx(1.0)
    assert result["prca"]["accuracy_kept"][-1] == pytest.approx(result["accuracy_full"])
    # nothing projected away: the shipped model's own test accuracy, as `neurotomy evaluate` recorded it in zoo.json
    zoo = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "zoo.json").read_text())
    assert accuracy_kept(lenet, digits_test, "features.4", None) == pytest.approx(
        zoo["lenet5-digits"]["test_accuracy"], abs=1e-9)


def test_directions_and_concepts_for_a_report(lenet, digits_train, digits_test):
    section = directions_and_concepts(lenet, digits_train, digits_test, layer="features.4", ks=(1, 2), drsa_subspaces=2,
                                      drsa_size=2, n_images=2, n_reference=2, per_side=1, max_images=64,
                                      eval_images=100)
    assert len(section["spectra"]["prca_relevance"]) == 16 and len(section["spectra"]["pca_variance"]) == 16
    assert section["heatmaps"]["maps"].shape == (2, 3, 8, 8)
    assert len(section["drsa"]["relevance_share"]) == 2 and len(section["drsa"]["accuracy_removed"]) == 2
    assert set(section["concepts"]) == {"kept", "pruned"}
    kept = section["concepts"]["kept"]
    images, maps = next(iter(kept["shown"].values()))
    assert images.shape == (2, 1, 8, 8) and maps.shape == (2, 8, 8)
    # both spectra are shares: the eigenvalues add up to the total relevance and the total variance
    for spectrum in ("prca_relevance", "pca_variance"):
        assert sum(section["spectra"][spectrum]) == pytest.approx(1.0, rel=1e-6)
