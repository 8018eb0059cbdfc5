"""``neurotomy inspect``: the layer-level picture of one model, written to a directory.

Writes ``inspect.json`` (layer table, modularity curve with the redundant blocks the rule finds,
CKA matrix), ``modularity.png`` and ``cka.png``; every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torch.utils.data import Dataset

from neurotomy.distributed import is_main_process
from neurotomy.dynamics.modularity import modularity_curve
from neurotomy.dynamics.similarity import similarity_matrix
from neurotomy.files import write_json
from neurotomy.models.anatomy import model_input_shape, removable_blocks
from neurotomy.models.summary import layer_table
from neurotomy.report.dynamics_plots import plot_modularity_curve, plot_similarity


def inspect_model(model: nn.Module, data: Dataset, out_dir: Path, per_class: int = 100, k: int = 3,
                  threshold: float = 0.25, cka_samples: int = 500, seed: int = 0, quiet: bool = False) -> dict:
    out_dir = Path(out_dir)
    curve = modularity_curve(model, data, per_class=per_class, k=k, seed=seed, quiet=quiet)
    cka = similarity_matrix(model, data, samples=cka_samples, seed=seed)
    result = {
        "layer_table": layer_table(model, model_input_shape(model, data)).to_dict(),
        "modularity": curve.to_dict(),
        "delta_q": curve.delta_q(),
        "redundant_blocks": curve.redundant(removable_blocks(model), threshold=threshold),
        "redundancy_threshold": threshold,
        "cka": cka,
    }
    if is_main_process():  # under accelerate launch every process holds the result; one writes it
        out_dir.mkdir(parents=True, exist_ok=True)  # only now: a failed analysis leaves no empty directory
        write_json(out_dir / "inspect.json", result)
        plot_modularity_curve(curve, out_dir / "modularity.png")
        plot_similarity(cka, out_dir / "cka.png", "linear CKA between layers")
    return result
