"""Per-layer table of a model: output shape, parameters and multiply-accumulates (MACs).

MACs count the multiplications of convolutions and linear layers (the convention of the pruning
papers); normalisation, activation and pooling layers are listed with 0 MACs.

Example:
    >>> from neurotomy.models import build_model
    >>> table = layer_table(build_model("lenet5", 1, 10, 28), (1, 28, 28))
    >>> table.rows[0]["name"], table.rows[0]["macs"]
    ('features.0', 117600)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neurotomy.models.anatomy import eval_mode
from neurotomy.probe import Probe, leaf_modules


@dataclass
class LayerTable:
    rows: list[dict]

    @property
    def total_params(self) -> int:
        return sum(r["params"] for r in self.rows)

    @property
    def total_macs(self) -> int:
        return sum(r["macs"] for r in self.rows)

    def to_dict(self) -> dict:
        return {"layers": self.rows, "total_params": self.total_params, "total_macs": self.total_macs}


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return int(output[0].numel() * per_output)
    if isinstance(module, nn.Linear):
        return int(module.in_features * module.out_features)
    return 0


@torch.no_grad()
def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> LayerTable:
    """Run one image of ``input_shape`` through ``model`` and tabulate every leaf layer it used."""
    rows: dict[str, dict] = {}

    def record(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor):
            return
        row = rows.setdefault(name, {"name": name, "type": type(module).__name__,
                                     "output_shape": list(output.shape[1:]),
                                     "params": sum(p.numel() for p in module.parameters(recurse=False)),
                                     "macs": 0})
        row["macs"] += _layer_macs(module, output)  # a module used twice costs twice

    with eval_mode(model), Probe(model, leaf_modules(model), on_module=record):
        model(torch.zeros(1, *input_shape))
    return LayerTable(list(rows.values()))


def count_macs_params(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass; parameters include unused ones."""
    table = layer_table(model, input_shape)
    return table.total_macs, sum(p.numel() for p in model.parameters())
