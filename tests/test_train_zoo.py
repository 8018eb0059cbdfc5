"""benchmarks/train_zoo.py --verify: a stamped re-measurement of a shipped checkpoint, which becomes the
stamp of an entry trained before the stamps and sits beside the stamp of one trained after them."""

from tests.benchmark_scripts import load_benchmark

STAMP = {"git_commit": "new", "load_average_start": [0.3, 0.2, 0.1], "load_average_end": [0.4, 0.2, 0.1]}


def test_a_legacy_entry_takes_the_verification_as_its_stamp():
    zoo = load_benchmark("train_zoo")
    legacy = {"command": "neurotomy train x", "test_accuracy": 0.75, "test_images": 4, "train_seconds": 9.0,
              "machine": "m", "git_commit": "old", "date": "then", "load_average_start": None,
              "load_average_end": None}
    out = zoo.verified_entry(legacy, {"accuracy": 0.75, "n": 4}, "sha", STAMP)
    assert out["git_commit"] == "new" and out["load_average_start"] == [0.3, 0.2, 0.1]
    assert out["training"] == {"train_seconds": 9.0, "machine": "m", "date": "then", "results_committed_in": "old"}
    assert out["verified"]["agrees"] and out["verified"]["checkpoint_sha256"] == "sha"
    assert out["command"] == "neurotomy train x" and out["test_accuracy"] == 0.75
    again = zoo.verified_entry(out, {"accuracy": 0.75, "n": 4}, "sha", {**STAMP, "git_commit": "newer"})
    assert again["git_commit"] == "newer" and again["training"] == out["training"]  # the last check is the stamp


def test_a_stamped_entry_keeps_its_training_stamp_and_a_disagreement_is_reported():
    zoo = load_benchmark("train_zoo")
    trained = {"test_accuracy": 0.75, "test_images": 4, **STAMP, "git_commit": "trained"}
    out = zoo.verified_entry(trained, {"accuracy": 0.5, "n": 4}, "sha", {**STAMP, "git_commit": "checked"})
    assert out["git_commit"] == "trained" and out["verified"]["git_commit"] == "checked"
    assert out["verified"]["agrees"] is False and out["verified"]["test_accuracy"] == 0.5
    assert zoo.verified_entry(trained, {"accuracy": 0.75, "n": 5}, "sha", STAMP)["verified"]["agrees"] is False
