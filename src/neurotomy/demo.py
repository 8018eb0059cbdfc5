"""The main job, first version: load the shipped ResNet-20, evaluate it, tabulate its layers.

Later issues extend this into the full dissection (scores → pruning → explanations → report).
"""

from __future__ import annotations

import json
from pathlib import Path

from neurotomy.checkpoint import atomic_write
from neurotomy.data import load_dataset
from neurotomy.models.summary import layer_table
from neurotomy.models.zoo import load_model
from neurotomy.report.tables import format_layer_table
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
    summary = {"model": DEMO_MODEL, "arch": meta.arch, "dataset": meta.dataset,
               "data_root": root or "shipped subset", "evaluation": metrics, "layers": table.to_dict(),
               "recorded_test_accuracy": meta.metrics.get("test", {}).get("accuracy")}
    path = Path(out_dir) / "summary.json"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return summary
