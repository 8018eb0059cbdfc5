"""benchmarks/layer_dynamics.py's summary judges a block count only once it has its random draws."""

from tests.benchmark_scripts import load_benchmark


def record(method: str, count: int, acc: float, seed: int = 0) -> dict:
    return {"model": "m", "method": method, "blocks_count": count, "seed": seed, "finetune_epochs": 3,
            "acc_finetuned": acc}


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
