"""Model matrix (issue 20): does every command's machinery work on the models users bring?

For each torchvision and timm classifier of the issue's list (random init, 10 classes, RGB at
``--size`` px, 64 by default) and a user-file model (tests/user_net.py: a reused ReLU, a residual
add and a concat):

* **counting** — ``macs_ours`` (``neurotomy info``: :func:`neurotomy.models.summary.layer_table`)
  against ``macs_flopcounter`` (a plain ``torch.utils.flop_counter.FlopCounterMode`` run, FLOPs / 2),
  ``params_ours`` (the table's total) against ``params_true`` (``sum(p.numel())``);
* **pruning** — L1 scores, ``prune_filters(target_macs=0.5)``: ``prune_ok`` when it succeeds and
  the measured reduction is within ±2 pt; the layers torch-pruning refuses are listed;
* **reload** — ``save_checkpoint`` then ``load_model``: ``reload_max_diff``, the largest absolute
  difference of the logits against the pruned model in memory (two random images);
* **explaining** — ``gradcam``, ``gradient`` and ``pathway`` on the reloaded model (``explain_ok``
  when all three run and give finite maps; each method's error is recorded otherwise);
* **layer pruning** — ``layer_blocks`` and ``removable_blocks`` (the blocks :mod:`neurotomy.models.anatomy`
  finds), the last two removable ones removed from the unpruned model, saved and reloaded:
  ``layers_ok`` when the reloaded model's logits are within 1e-5 of the cut model's (``layers_reload_max_diff``);
  null for a model with no removable block (DenseNet, ShuffleNet, GoogLeNet: no residual sum).

Run (2 shared cores: one model at a time, a few minutes in all)::

    nice python benchmarks/model_matrix.py            # → benchmarks/results/model_matrix.json

The record is stamped with the commit, date, threads and load average it ran under
(:mod:`neurotomy.provenance`); timings measure a shared machine and are indicative only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

from neurotomy import load_model, save_checkpoint
from neurotomy.explain import attribute
from neurotomy.files import write_json
from neurotomy.models.anatomy import layer_blocks, removable_blocks
from neurotomy.models.summary import layer_table
from neurotomy.provenance import begin_stamp, end_stamp
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters
from neurotomy.surgery.layers import remove_blocks

TORCHVISION = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "regnet_x_400mf",
               "resnext50_32x4d", "mnasnet0_5", "densenet121", "shufflenet_v2_x0_5", "googlenet"]
TIMM = ["resnet18", "mobilenetv3_small_100", "convnext_atto", "efficientnet_b0"]
METHODS = ("gradcam", "gradient", "pathway")
RESULTS = Path(__file__).resolve().parent / "results" / "model_matrix.json"

# the user's model file the tests load too (one copy): ``UserNet`` is its factory here, as ``make``
# takes no ``in_channels`` and the matrix runs RGB
USER_MODEL = Path(__file__).resolve().parents[1] / "tests" / "user_net.py"
USER_FACTORY = "UserNet"


def plain_flop_counter_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """FlopCounterMode as PyTorch ships it, nothing added (FLOPs / 2): the independent reference."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, *shape))
    return int(counter.get_total_flops()) // 2


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def run_model(spec: str, source: str, size: int, work: Path) -> dict:
    """Every measurement of one model; a failing step is recorded, never fatal."""
    start = time.perf_counter()
    torch.manual_seed(0)
    name = spec.split(":", 1)[1] if source != "file" else f"user_net.py:{USER_FACTORY}"
    record: dict = {"name": name, "source": source, "spec": spec, "input_size": size}
    shape = (3, size, size)
    model = load_model(spec, in_channels=3, num_classes=10, input_size=size)
    table = layer_table(model, shape)
    record.update(macs_ours=table.total_macs, macs_flopcounter=plain_flop_counter_macs(model, shape),
                  params_ours=table.total_params, params_true=sum(p.numel() for p in model.parameters()))
    reference = record["macs_flopcounter"]
    record["macs_within_1pct"] = abs(record["macs_ours"] - reference) <= 0.01 * reference
    pruned = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = prune_filters(model, get_criterion("l1")(model), target_macs=0.5)
        pruned = result.model
        record.update(macs_reduction=result.macs_reduction, params_reduction=result.params_reduction,
                      prune_ok=abs(result.macs_reduction - 0.5) <= 0.02,
                      refused_layers=sorted(result.details.get("refused_layers", {})),
                      prune_warnings=[str(w.message) for w in caught if "torch-pruning" in str(w.message)])
    except Exception as exc:  # a refusal is a result here
        record.update(prune_ok=False, prune_error=one_line(exc))
    reloaded = None
    if pruned is not None:
        try:
            checkpoint = work / f"{source}_{record['name'].replace(':', '_').replace('.', '_')}.safetensors"
            reloaded = load_model(save_checkpoint(pruned, checkpoint))
            x = torch.randn(2, *shape)
            with torch.no_grad():
                record["reload_max_diff"] = float((reloaded(x) - pruned.eval()(x)).abs().max())
        except Exception as exc:
            record.update(reload_max_diff=None, reload_error=one_line(exc))
    target = reloaded if reloaded is not None else model
    record["explained_model"] = "pruned, reloaded" if reloaded is not None else "unpruned"
    explain = {}
    for method in METHODS:
        try:
            maps = attribute(target, torch.randn(2, *shape), method=method)
            explain[method] = "ok" if bool(torch.isfinite(maps).all()) else "non-finite map"
        except Exception as exc:
            explain[method] = one_line(exc)
    record.update(explain=explain, explain_ok=all(v == "ok" for v in explain.values()))
    record.update(layer_pruning(model, shape, work / f"{source}_{record['name'].replace(':', '_')}_layers"),
                  seconds=round(time.perf_counter() - start, 1))
    return record


def layer_pruning(model: torch.nn.Module, shape: tuple[int, ...], path: Path) -> dict:
    """The blocks found, and the last two removable ones removed, saved and reloaded."""
    try:
        blocks, removable = layer_blocks(model), removable_blocks(model)
    except Exception as exc:
        return {"layers_ok": False, "layers_error": one_line(exc)}
    found = {"layer_blocks": len(blocks), "removable_blocks": len(removable)}
    if not removable:
        return {**found, "layers_ok": None}
    try:
        cut = remove_blocks(model, removable[-2:])
        reloaded = load_model(save_checkpoint(cut, path.with_suffix(".safetensors")))
        x = torch.randn(2, *shape)
        with torch.no_grad():
            diff = float((reloaded(x) - cut.eval()(x)).abs().max())
        return {**found, "blocks_removed": removable[-2:], "layers_reload_max_diff": diff, "layers_ok": diff <= 1e-5}
    except Exception as exc:
        return {**found, "blocks_removed": removable[-2:], "layers_ok": False, "layers_error": one_line(exc)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="input side in pixels (default 64)")
    parser.add_argument("--models", nargs="*", help="only these specs (torchvision:NAME, timm:NAME)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    stamp = begin_stamp()
    work = Path(tempfile.mkdtemp(prefix="model_matrix_"))
    (work / "user_net.py").write_text(USER_MODEL.read_text())
    specs = [(f"torchvision:{n}", "torchvision") for n in TORCHVISION] + [(f"timm:{n}", "timm") for n in TIMM]
    specs.append((f"{work / 'user_net.py'}:{USER_FACTORY}", "file"))
    if args.models:
        specs = [(s, src) for s, src in specs if s in args.models]
    records = []
    for spec, source in specs:
        print(f"model matrix: {spec}", flush=True)
        try:
            records.append(run_model(spec, source, args.size, work))
        except Exception as exc:
            traceback.print_exc()
            records.append({"name": spec, "source": source, "error": one_line(exc)})
        print(f"  {records[-1]}", flush=True)
    summary = {"models": len(records), "macs_within_1pct": sum(bool(r.get("macs_within_1pct")) for r in records),
               "params_exact": sum(r.get("params_ours") == r.get("params_true") for r in records),
               "prune_ok": sum(bool(r.get("prune_ok")) for r in records),
               "reload_exact_1e-5": sum((r.get("reload_max_diff") is not None and r["reload_max_diff"] <= 1e-5)
                                        for r in records),
               "explain_ok": sum(bool(r.get("explain_ok")) for r in records),
               "with_removable_blocks": sum(bool(r.get("removable_blocks")) for r in records),
               "layers_ok": sum(r.get("layers_ok") is True for r in records)}
    write_json(args.out, {"benchmark": "model_matrix", "input_size": args.size, "num_classes": 10,
                          "criterion": "l1", "target_macs_reduction": 0.5, "summary": summary,
                          "records": records, **end_stamp(stamp)})
    print(f"{summary} — wrote {args.out}")


if __name__ == "__main__":
    main()
