"""benchmarks/layer_dynamics.py's summary judges a block count only once it has its random draws."""

from tests.benchmark_scripts import load_benchmark


def record(method: str, count: int, acc: float, seed: int = 0) -> dict:
    return {"model": "m", "method": method, "blocks_count": count, "seed": seed, "finetune_epochs": 3,
            "acc_finetuned": acc, "acc_original": 0.95}


def test_a_count_with_too_few_draws_is_listed_but_not_judged():
    ld = load_benchmark("layer_dynamics")
    records = [record("modularity", 1, 0.95), record("last", 1, 0.94), record("random", 1, 0.90),
               record("random", 1, 0.91, seed=1),  # 2 draws: modularity is above both, but that is no verdict
               record("modularity", 2, 0.92), record("last", 2, 0.93)]
    records += [record("random", 2, acc, seed=s) for s, acc in enumerate((0.91, 0.925, 0.93, 0.90, 0.915))]
    summary = ld.summarize(records, "m", 1.0, min_draws=5)
    assert [r["blocks_count"] for r in summary["rows"]] == [1, 2]
    assert summary["beats_random_at"] == [] and summary["beats_last_at"] == []
    assert summary["verdict"].startswith("at 1 block counts [2]")
    assert ld.summarize(records, "m", 1.0, min_draws=2)["beats_random_at"] == [1]
    assert ld.summarize(records[:4], "m", 1.0)["verdict"] == "no block count with 5 random draws yet"


def test_merge_joins_a_second_processes_records_once_and_only_for_the_same_checkpoint(tmp_path, monkeypatch):
    import json
    import sys

    ld = load_benchmark("layer_dynamics")
    curve = {"m": {"layers": ["stem", "b1", "fc:input"], "q": [0.2, 0.5, 0.6], "q_std": [0.01] * 3, "k": 3,
                   "n_samples": 10, "graph_size": None, "seconds": 1.0, "model_sha": "a"}}
    mine = [{**record("modularity", 1, 0.95), "model_sha": "a"}]
    mine += [{**record("random", 1, acc, seed=s), "model_sha": "a"} for s, acc in enumerate((0.9, 0.91, 0.92))]
    theirs = [{**record("modularity", 2, 0.93), "model_sha": "a"},  # new: joins
              {**record("random", 1, 0.5, seed=0), "model_sha": "a"},  # a cut --out holds already: kept as it was
              {**record("random", 2, 0.94, seed=0), "model_sha": "b"}]  # another checkpoint: left out
    out, other = tmp_path / "ld.json", tmp_path / "ld_b.json"
    out.write_text(json.dumps({"curve": curve, "plateau": {}, "single_graph": {}, "layer_pruning": mine,
                               "machine": "test"}))
    other.write_text(json.dumps({"curve": curve, "layer_pruning": theirs}))
    monkeypatch.setattr(sys, "argv", ["layer_dynamics.py", "--root", "unused", "--out", str(out),
                                      "--draws", "3", "--merge", str(other)])
    ld.main()
    merged = json.loads(out.read_text())
    cuts = sorted((r["method"], r["blocks_count"], r["seed"], r["acc_finetuned"]) for r in merged["layer_pruning"])
    assert cuts == [("modularity", 1, 0, 0.95), ("modularity", 2, 0, 0.93), ("random", 1, 0, 0.9),
                    ("random", 1, 1, 0.91), ("random", 1, 2, 0.92)]
    assert merged["summary"]["m"]["beats_random_at"] == [1]
    assert (tmp_path / "ld.png").exists() and (tmp_path / "ld_pruning.png").exists()
    assert ld.merge_records(merged, theirs) == 0  # merging twice adds nothing
