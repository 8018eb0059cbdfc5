"""Per-layer table of a model: output shape, parameters and multiply-accumulates (MACs).

MACs are counted by PyTorch's own ``FlopCounterMode`` on one forward pass (MACs = FLOPs / 2 for
the matmul-like operations it counts: convolutions of any grouping, ``mm``/``addmm``/``bmm`` — so a
Linear layer applied to every position of a feature map or every token costs what it computes —
and scaled-dot-product attention), never re-derived per layer type. Each count is attributed to
the module that ran it: a leaf layer (Conv2d, Linear, …), or the innermost non-leaf module whose
own ``forward`` does the arithmetic (a matmul in an attention block's forward), listed as its own
row. Normalisation, activation and pooling layers are listed with 0 MACs (the convention of the
pruning papers); a module used twice costs twice.

Example:
    >>> from neurotomy.models import build_model
    >>> table = layer_table(build_model("lenet5", 1, 10, 28), (1, 28, 28))
    >>> table.rows[0]["name"], table.rows[0]["macs"]
    ('features.0', 117600)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils import flop_counter

from neurotomy.device import model_device
from neurotomy.models.anatomy import eval_mode
from neurotomy.probe import Probe


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


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """FLOPs of the CPU flash-attention kernel, which FlopCounterMode does not list (as its other
    scaled-dot-product kernels: two batched matmuls)."""
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_formulas() -> dict:
    formulas = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        formulas[op] = _sdpa_cpu_flops  # FlopCounterMode wraps it to receive shapes
    return formulas


@contextmanager
def _counting() -> Iterator[flop_counter.FlopCounterMode]:
    """FlopCounterMode with attention counted: the fused fast paths of nn.MultiheadAttention and
    nn.TransformerEncoderLayer (one native kernel FlopCounterMode cannot see into) are turned off
    while counting, so their projections and matmuls are counted one by one."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with flop_counter.FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:
            yield counter
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _module_flops(counter: flop_counter.FlopCounterMode) -> dict[str, int]:
    """Inclusive FLOPs per module name (``""`` for the model itself), from FlopCounterMode's
    hierarchy, whose names start with the model's class name."""
    flops = {}
    for fqn, ops in counter.get_flop_counts().items():
        if fqn == "Global":
            continue
        _, _, name = fqn.partition(".")
        flops[name] = flops.get(name, 0) + int(sum(ops.values()))
    return flops


def _self_flops(inclusive: dict[str, int], modules: dict[str, nn.Module]) -> dict[str, int]:
    """FLOPs each module spends outside its children (its own forward's matmuls; a leaf's all).

    A module's nearest *counted* descendants are subtracted, not its children: FlopCounterMode lists
    only modules that are called, and a container a forward iterates but never calls (a ModuleList,
    MaxViT's ``blocks`` and ``blocks.N.layers``) holds layers whose FLOPs its ancestors include too.
    Each counted module is then subtracted once, from its nearest counted ancestor, so the counts sum
    to the model's total whenever modules run inside their ancestors' forwards.
    """
    def counted(name: str, module: nn.Module) -> list[str]:
        found = []
        for child_name, child in module.named_children():
            child_name = f"{name}.{child_name}" if name else child_name
            found += [child_name] if child_name in inclusive else counted(child_name, child)
        return found

    return {name: max(0, total - sum(inclusive[d] for d in counted(name, modules[name]))) if name in modules
            else total for name, total in inclusive.items()}


@torch.no_grad()
def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> LayerTable:
    """Run one image of ``input_shape`` through ``model`` and tabulate every leaf layer it used,
    every other module that computes MACs or holds parameters of its own, and modules whose
    parameters are used without calling them (``nn.MultiheadAttention``'s ``out_proj``; listed
    with no output shape), so the table's parameters are the model's."""
    modules = dict(model.named_modules())
    seen: dict[str, dict] = {}

    def record(name: str, module: nn.Module, inputs: tuple, output) -> None:
        if name not in seen:
            shape = list(output.shape[1:]) if isinstance(output, torch.Tensor) else []
            seen[name] = {"name": name, "type": type(module).__name__, "output_shape": shape,
                          "params": sum(p.numel() for p in module.parameters(recurse=False)), "macs": 0}

    with eval_mode(model), Probe(model, list(modules), on_module=record), _counting() as counter:
        model(torch.zeros(1, *input_shape, device=model_device(model)))
    own = _self_flops(_module_flops(counter), modules)
    total = int(counter.get_total_flops())
    rows = []
    for name, row in seen.items():  # post-hook order: a block after the layers inside it
        row["macs"] = own.get(name, 0) // 2
        leaf = not any(True for _ in modules[name].children())
        if leaf or row["macs"] or row["params"]:
            rows.append(row)
    for name, module in modules.items():  # parameters a forward uses without calling their module
        if name not in seen and any(True for _ in module.parameters(recurse=False)):
            rows.append({"name": name, "type": type(module).__name__, "output_shape": [],
                         "params": sum(p.numel() for p in module.parameters(recurse=False)), "macs": 0})
    missing = total // 2 - sum(r["macs"] for r in rows)
    if missing > 0:  # arithmetic outside every module's bookkeeping: charge it to the model itself
        root = seen.get("") or {"name": "", "type": type(model).__name__, "output_shape": [], "params": 0, "macs": 0}
        if root not in rows:
            rows.append(root)
        root["macs"] += missing
    return LayerTable(rows)


def count_macs_params(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs, parameters) of one forward pass; parameters include unused ones."""
    table = layer_table(model, input_shape)
    return table.total_macs, sum(p.numel() for p in model.parameters())


def flop_counter_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass as FlopCounterMode alone counts them (FLOPs / 2): the reference
    :func:`layer_table` is checked against.

    Example:
        >>> from neurotomy.models import build_model
        >>> model = build_model("resnet20", 1, 10, 28)
        >>> flop_counter_macs(model, (1, 28, 28)) == layer_table(model, (1, 28, 28)).total_macs
        True
    """
    with torch.no_grad(), eval_mode(model), _counting() as counter:
        model(torch.zeros(1, *input_shape, device=model_device(model)))
    return int(counter.get_total_flops()) // 2
