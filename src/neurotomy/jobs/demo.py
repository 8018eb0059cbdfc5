"""The main job on the shipped model and data: ``neurotomy dissect zoo:resnet20-fmnist`` with the
shipped Fashion-MNIST subset (or a full copy under ``root``), written to ``out_dir/report.html``
and ``out_dir/report.json``. See :func:`neurotomy.jobs.dissect.dissect`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from neurotomy.data import load_dataset
from neurotomy.device import place
from neurotomy.jobs.dissect import dissect
from neurotomy.loading import load_model

DEMO_MODEL = "zoo:resnet20-fmnist"


def run_demo(out_dir: Path, root: str | None = None, quiet: bool = False, seed: int = 0,
             budget: str = "fast", device: str | torch.device | None = None) -> dict:
    """Dissect the demo model: prune half its MACs, recover, compare, explain; return the report."""
    model = place(load_model(DEMO_MODEL), device)
    dataset = model.neurotomy_meta.dataset
    return dissect(model, load_dataset(dataset, root=root, split="train"), load_dataset(dataset, root=root, split="test"),
                   out_dir=out_dir, budget=budget, target_macs=0.5, seed=seed, quiet=quiet, model_name=DEMO_MODEL)
