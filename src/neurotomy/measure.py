"""Measuring a model against another: size, MACs, accuracy and CPU latency, honestly.

Latency is noisy on a shared 2-core machine, so: warm up, run under ``torch.inference_mode()``,
interleave the models in rounds (A B, B A, …) so drifts hit both alike, and report the median
and the minimum of each with the thread count and the load average it was measured under — all
through the shared :func:`~neurotomy.timing.interleaved_timing`.

Example:
    >>> from neurotomy.models import build_model
    >>> a, b = build_model("lenet5", 1, 10, 28), build_model("lenet5", 1, 10, 28)
    >>> t = interleaved_latency([a, b], (1, 28, 28), batch_size=1, rounds=3, repeats=2, warn=False)
    >>> t[0]["median_ms"] >= t[0]["min_ms"] > 0, t[0]["threads"] == t[1]["threads"], len(t[0]["load_average"])
    (True, True, 2)
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path

import torch
from torch import nn

from neurotomy.device import on_cpu
from neurotomy.models.summary import count_macs_params
from neurotomy.timing import interleaved_timing


LATENCY_BUDGET_S = 30.0  # per batch size in compare_models: a large model gets fewer rounds (at least 3), not minutes


@torch.inference_mode()
def interleaved_latency(models: list[nn.Module], input_shape: tuple[int, ...], batch_size: int,
                        rounds: int = 15, repeats: int = 5, warmup: int = 3, threads: int | None = None,
                        warn: bool = True, budget_s: float | None = None) -> list[dict]:
    """Per model: median and minimum milliseconds per forward pass of ``batch_size`` images, with
    ``threads`` and the 1-minute ``load_average`` ``[start, end]`` (see
    :func:`~neurotomy.timing.interleaved_timing`; ``threads=1`` for a shared machine). Always on the
    CPU: a model on another device is timed as a CPU copy."""
    x = torch.randn(batch_size, *input_shape)
    models = [on_cpu(m) for m in models]  # latency is CPU latency, whatever the device the run computes on
    for m in models:
        m.eval()
    return interleaved_timing([functools.partial(m, x) for m in models], rounds=rounds, repeats=repeats,
                              warmup=warmup, threads=threads, warn=warn, budget_s=budget_s)


def checkpoint_size(model: nn.Module) -> int:
    """Bytes of the model's safetensors checkpoint, its measured ``metrics`` left out of the header:
    they hold timings, which would make the same seed give a different size on every run."""
    from neurotomy.checkpoint import ModelMeta, save_checkpoint

    meta = getattr(model, "neurotomy_meta", None)
    meta = dataclasses.replace(meta, metrics={}) if meta is not None else ModelMeta(arch="unknown", arch_args={})
    with tempfile.TemporaryDirectory() as tmp:
        return save_checkpoint(model, meta, Path(tmp) / "m.safetensors").stat().st_size


def compare_models(original: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...],
                   original_metrics: dict | None = None, pruned_metrics: dict | None = None,
                   latency_batches: tuple[int, ...] = (1, 64), threads: int | None = None) -> dict:
    """The before/after record of a prune: params, MACs, file size, accuracy (top-1 and per-class
    recall, from the given :func:`~neurotomy.train.evaluate` results) and interleaved latency, with
    the ``threads`` it ran on (``threads=1``: time single-threaded, for a shared machine) and the
    1-minute ``load_average`` ``[start, end]`` over all latency rounds (``None`` when none ran)."""
    record: dict = {"threads": threads or torch.get_num_threads(), "load_average": None, "machine_busy": None}
    for key, model, metrics in (("original", original, original_metrics), ("pruned", pruned, pruned_metrics)):
        macs, params = count_macs_params(model, input_shape)
        record[key] = {"params": params, "macs": macs, "file_bytes": checkpoint_size(model)}
        if metrics is not None:
            record[key].update(accuracy=metrics["accuracy"], per_class_recall=metrics.get("per_class_recall"))
    for batch in latency_batches:
        a, b = interleaved_latency([original, pruned], input_shape, batch, threads=threads,
                                   budget_s=LATENCY_BUDGET_S)
        record["original"][f"latency_b{batch}"] = a
        record["pruned"][f"latency_b{batch}"] = b
        record[f"speedup_batch{batch}"] = a["median_ms"] / b["median_ms"]
        record["threads"] = a["threads"]
        loads = (record["load_average"] or []) + a["load_average"]
        record["load_average"] = [loads[0], loads[-1]]
        record["machine_busy"] = bool(record["machine_busy"]) or a["machine_busy"]
    record["macs_ratio"] = record["original"]["macs"] / max(1, record["pruned"]["macs"])
    record["params_ratio"] = record["original"]["params"] / max(1, record["pruned"]["params"])
    return record
