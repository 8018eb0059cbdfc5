"""The main job: load the shipped ResNet-20, evaluate it, tabulate its layers, then run the
pruning spine once (L1 and HRank scores and their rank agreement → halve the MACs → recalibrate
BatchNorm → measure). Later issues extend this into the full dissection report.
"""

from __future__ import annotations

from pathlib import Path

from neurotomy.files import write_json
from neurotomy.data import load_dataset
from neurotomy.models.summary import layer_table
from neurotomy.models.zoo import load_model
from neurotomy.pruning import PruneJob
from neurotomy.report.tables import format_layer_table, format_prune_record
from neurotomy.scores import get_criterion
from neurotomy.train import evaluate, seed_everything

DEMO_MODEL = "zoo:resnet20-fmnist"


def run_demo(out_dir: Path, root: str | None = None, quiet: bool = False, seed: int = 0) -> dict:
    """Evaluate the demo model on the (shipped) test split; write ``out_dir/summary.json``."""
    seed_everything(seed)
    model = load_model(DEMO_MODEL)
    meta = model.neurotomy_meta
    data = load_dataset(meta.dataset, root=root, split="test")
    table = layer_table(model, meta.input_shape)
    if not quiet:
        print(format_layer_table(table))
    metrics = evaluate(model, data, quiet=quiet)
    train = load_dataset(meta.dataset, root=root, split="train")
    agreement = get_criterion("l1")(model).rank_correlation(
        get_criterion("hrank")(model, train, seed=seed, quiet=quiet))
    job = PruneJob(criterion="l1", target_macs=0.5, seed=seed, quiet=quiet)
    _, record = job.run(model, train, data, original_metrics=metrics)
    if not quiet:
        print(format_prune_record(record))
    summary = {"model": DEMO_MODEL, "arch": meta.arch, "dataset": meta.dataset,
               "data_root": root or "shipped subset", "evaluation": metrics, "layers": table.to_dict(),
               "recorded_test_accuracy": meta.metrics.get("test", {}).get("accuracy"),
               "score_agreement_l1_vs_hrank": agreement, "pruning": record}
    path = Path(out_dir) / "summary.json"
    write_json(path, summary)
    return summary
