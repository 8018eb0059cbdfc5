"""Pruning zoo:vit-tiny-fmnist by heads, MLP neurons and embedding channels: our criteria against
torch-pruning's own ViT recipe, at the same MACs targets, before and after the same fine-tune
(issue #21, "Benchmark").

Three stages, each resumable, all writing ``vit.json`` (atomically, after every record) and ``vit.png``:

* ``accuracy`` — per configuration (method, criterion, units, scope) and MACs target (−30/−50/−70 %):
  the cut, its test accuracy as cut (LayerNorm keeps no running statistics, so nothing is
  recalibrated: "BN-free recovery" is the cut model itself), then ``--finetune-epochs`` (3) epochs on
  the full training set with one recipe for every configuration (AdamW, cosine from ``--finetune-lr``,
  distillation from the unpruned ViT: KL at T 4, weight 0.5; see ``finetune`` in the JSON), test accuracy
  after each epoch. Each fine-tuned model is saved under ``--build`` with its surgery recipe
  (``neurotomy.load_model`` rebuilds it), each fine-tune saves its epochs there (``RunState``), and a
  record already in the JSON is skipped: a killed run continues where it stopped.
* ``explanations`` — on ``--explain-images`` (100) class-balanced test images: rollout, grad_rollout,
  gradcam (token map) and gradient rated by deletion/insertion on the unpruned ViT
  (``rate_explanations``), and same-reasons agreement (``compare_reasons``: Spearman of |map| and
  top-10 % IoU) between the unpruned ViT and the best −50 % fine-tuned model of ours and of the baseline.
* ``timing`` — waits for a quiet machine (``require_quiet_machine``), reloads every saved model and
  times the original and all of them at batch 64 on the CPU, interleaved (``interleaved_timing``),
  median and min, threads and load recorded; each run is kept in ``timing_runs``, and
  ``speedup_batch64`` = the median over the runs of original median / pruned median.
  ``--retime`` adds another run over records already timed. ``--timing-method isolated`` times each
  model alone in fresh processes instead (one per model per round, alternating; a seeded random batch,
  as a ViT's latency does not depend on the pixels): its runs go to ``isolated_timing_runs`` and
  ``speedup_batch64_isolated``, beside — never instead of — the in-process figures above.
  ``--archive-timing LABEL`` moves all of them under ``timing_history[LABEL]`` first, for when the timed
  code changed (the ViT's attention took PyTorch's fused kernel in fb87ba2).

The baseline is torch-pruning's ``MetaPruner`` as in its ``examples/transformers/prune_timm_vit.py``:
``GroupTaylorImportance`` (gradients of the cross-entropy on the same ``--score-images`` training
images our data criteria see) or ``GroupMagnitudeImportance(p=2)``, ``num_heads={qkv: heads}``,
``prune_num_heads=True`` (whole heads, head width kept), global ranking, classifier ignored; its
``units=all`` prunes the residual stream too (the example's default), ``heads+neurons`` ignores every
``fc2`` (the example's ``--bottleneck``). One ``pruning_ratio`` is bisected until the MACs reduction lands on
the target, and ``head_pruning_ratio`` follows it (the example fixes 0.5; tied here so heads and widths move
together, as our planner's one ratio does). The removed indices of each torch-pruning group are replayed
through neurotomy's surgery, and the two models are checked to hold bit-identical tensors
(``baseline_rebuilt_identical``), so the baseline is saved and reloaded like ours.

Seeds: a lead of 0.2 pt is within one seed's noise (one standard error of a 10k-image accuracy is ≈ 0.27 pt),
so the −50 % comparison can be repeated with other ``--seed`` values into other ``--out`` directories and
read back with ``--repeat-runs DIR/vit.json …``: their fine-tuned records land in ``seed_repeats`` (each with
its seed and provenance; every setting but the seed must match), and ``targets`` gains
``ours_minus_baseline_at_50_pts_over_seeds`` (per-seed leads, mean, sd; met when the mean ≥ 0).

Definitions: ``macs_reduction`` = 1 − pruned MACs / original MACs; ``macs_ratio`` = original MACs / pruned
MACs (2.0 at −50 %); the speed target is ``speedup_batch64 ≥ 0.85 × macs_ratio``.

Usage: python benchmarks/vit.py [--root ../shared/data/fashion-mnist] [--stages accuracy explanations timing]
Smoke run (a tiny random ViT, minutes): python benchmarks/vit.py --smoke --out /tmp/vit-smoke --allow-busy
Writes benchmarks/results/vit.json and vit.png (``--out`` elsewhere for a trial run).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

from neurotomy.checkpoint import save_checkpoint
from neurotomy.data import load_dataset
from neurotomy.data.batches import iterate_batches
from neurotomy.data.dataset import batch_at
from neurotomy.data.subsets import balanced_subset
from neurotomy.errors import NeurotomyError, ResumeError
from neurotomy.explain.rating import compare_reasons, rate_explanations
from neurotomy.files import write_json
from neurotomy.jobs.isolated_timing import isolated_latency
from neurotomy.jobs.prune import calibration_images
from neurotomy.loading import load_model
from neurotomy.models import build_model
from neurotomy.models.summary import count_macs_params
from neurotomy.models.transformer import attention_sites, mlp_sites
from neurotomy.provenance import begin_stamp, end_stamp
from neurotomy.report.figures import save_figure
from neurotomy.run_state import RunState
from neurotomy.scores.transformer import TRANSFORMER_CRITERIA, score_transformer, transformer_criteria
from neurotomy.surgery.planner import Cut, default_ignored
from neurotomy.surgery.transformer import TP_IMPORTANCE, EmbeddingCut, HeadCut, apply_transformer_cuts, prune_transformer
from neurotomy.timing import interleaved_timing, require_quiet_machine
from neurotomy.train import TrainConfig, evaluate, fit, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared torch-pruning baseline helpers
from tp_baselines import bisect_ratio, require_identical  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGETS = (0.3, 0.5, 0.7)
STAGES = ("accuracy", "explanations", "timing")
UNIT_KINDS = ("head", "neuron", "embedding")  # as the scores name them
FAMILY = {"head": "heads", "neuron": "neurons", "embedding": "embedding"}  # as the surgery names them
UNITS = {"heads": ("head",), "neurons": ("neuron",), "embedding": ("embedding",), "heads+neurons": ("head", "neuron"),
         "all": UNIT_KINDS}
# ours: a criterion for every unit kind, or one name per kind (head, neuron[, embedding]) joined by "+";
# global scope, because a 4-head ViT's uniform ratio moves heads in quarters: on vit_tiny (heads+neurons) uniform
# landed at −74.6 % for the −70 % target, global within 0.7 pt of every target. Our cuts get what `neurotomy prune`
# gives a transformer: the split of the target between heads, neurons and the residual stream chosen by the loss
# on 512 seeded training images (neurotomy.surgery.allocation; before it, one ratio for every family cost the
# stream 40 of 128 channels at −50 %)
DEFAULT_CONFIGS = ("ours:l1:heads+neurons:global", "ours:taylor:heads+neurons:global",
                   "ours:attention_entropy+mean_activation:heads+neurons:global", "ours:l1:all:global",
                   "tp:taylor:all:global", "tp:taylor:heads+neurons:global")
EXPLAIN_METHODS = ("rollout", "grad_rollout", "gradcam", "gradient")
SPEED_FACTOR = 0.85  # speed-up ≥ 0.85 × MACs ratio
ACC_TOLERANCE_PTS = 1.0  # −50 % after fine-tuning within 1 pt of the unpruned ViT
TP_TOLERANCE = 0.003  # the baseline's bisection stops within 0.3 pt of the MACs target
SMOKE = {"max_train": 512, "max_test": 256, "finetune_epochs": 1, "score_images": 64, "explain_images": 20,
         "rounds": 3, "repeats": 1}


@dataclass(frozen=True)
class Config:
    """One way to prune: ``method`` (``ours`` or ``tp``), ``criterion``, ``units``, ``scope`` and, for
    ours, ``round_to`` (MLP neuron and embedding counts kept multiples of it: SIMD-aligned matmuls)."""

    method: str
    criterion: str
    units: str
    scope: str
    round_to: int | None = None

    @property
    def name(self) -> str:
        return f"{self.method}:{self.criterion}:{self.units}:{self.scope}" + (
            f":round{self.round_to}" if self.round_to else "")

    @property
    def label(self) -> str:
        return f"{'tp-' if self.method == 'tp' else ''}{self.criterion} ({self.units}, {self.scope})"

    def criteria(self) -> dict[str, str]:
        """The criterion of each unit kind this config cuts (ours)."""
        kinds = UNITS[self.units]
        names = self.criterion.split("+")
        return dict(zip(kinds, names * len(kinds) if len(names) == 1 else names))


def parse_config(text: str) -> Config:
    """``method:criterion:units:scope[:roundN]``, checked before any work (one line naming the fix)."""
    parts = text.split(":")
    round_to = None
    if len(parts) == 5 and re.fullmatch(r"round[1-9][0-9]*", parts[4]):
        round_to = int(parts.pop()[len("round"):])
    if len(parts) != 4:
        raise NeurotomyError(f"configuration {text!r}: write it as method:criterion:units:scope[:roundN], e.g. "
                             "ours:taylor:heads+neurons:global, ours:l1:all:global:round8 or tp:taylor:all:global")
    config = Config(*parts, round_to=round_to)
    if config.method not in ("ours", "tp"):
        raise NeurotomyError(f"configuration {text!r}: method {config.method!r} is neither ours nor tp")
    if config.units not in UNITS:
        raise NeurotomyError(f"configuration {text!r}: units {config.units!r}; use one of {', '.join(UNITS)}")
    if config.scope not in ("global", "uniform"):
        raise NeurotomyError(f"configuration {text!r}: scope {config.scope!r}; use global or uniform")
    if config.method == "tp":
        if config.round_to:
            raise NeurotomyError(f"configuration {text!r}: the torch-pruning recipe runs as published, without "
                                 "rounding; leave out the round suffix")
        if config.criterion not in TP_IMPORTANCE:
            raise NeurotomyError(f"configuration {text!r}: torch-pruning importance {config.criterion!r}; use one "
                                 f"of {', '.join(TP_IMPORTANCE)}")
        if config.units not in ("all", "heads+neurons"):
            raise NeurotomyError(f"configuration {text!r}: the torch-pruning recipe prunes all (its default) or "
                                 "heads+neurons (its --bottleneck); choose one of those")
        return config
    names = config.criterion.split("+")
    if len(names) not in (1, len(UNITS[config.units])):
        raise NeurotomyError(f"configuration {text!r}: give one criterion, or one per unit kind "
                             f"({'+'.join(UNITS[config.units])})")
    for unit, name in config.criteria().items():
        if name not in transformer_criteria(unit):
            raise NeurotomyError(f"configuration {text!r}: {name!r} does not score {unit}s; use one of "
                                 f"{', '.join(transformer_criteria(unit))}")
    return config


def record_key(config: Config, target: float) -> str:
    return f"{config.name}@{target:g}"


def slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9+.=-]", "_", key)


def machine() -> dict:
    """The hardware; every record's stamp has the threads and the load of its own measurement."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_pruning": tp.__version__, "gpu": torch.cuda.is_available()}


# --------------------------------------------------------------------------- cutting

class Scorer:
    """Our scores, computed once per (criterion, unit kind) on the same seeded training images."""

    def __init__(self, model: nn.Module, train, images: int | None, seed: int, quiet: bool) -> None:
        self.model, self.train, self.images, self.seed, self.quiet = model, train, images, seed, quiet
        self.cache: dict[tuple[str, str], object] = {}

    def __call__(self, criterion: str, unit: str):
        if (criterion, unit) not in self.cache:
            self.cache[criterion, unit] = score_transformer(self.model, criterion, unit, self.train,
                                                            max_images=self.images, seed=self.seed, quiet=self.quiet)
        return self.cache[criterion, unit]


def cut_ours(model: nn.Module, config: Config, target: float, scorer: Scorer, shape) -> tuple[nn.Module, dict]:
    scores = [scorer(name, unit) for unit, name in config.criteria().items()]
    units = [FAMILY[u] for u in UNITS[config.units]]
    images = calibration_images(count_macs_params(model, shape)[0])
    calibration = (list(iterate_batches(scorer.train, 128, shuffle=True, max_images=images,
                                        generator=torch.Generator().manual_seed(scorer.seed)))
                   if len(units) > 1 and images else None)  # as PruneJob does
    result = prune_transformer(model, scores, units=units, target_macs=target, scope=config.scope, input_shape=shape,
                               calibration=calibration, round_to=config.round_to)
    needs_data = any(TRANSFORMER_CRITERIA.tags(name)["needs_data"] for name in config.criteria().values())
    return result.model, {"ratio": result.ratio, "score_seconds": sum(s.info["seconds"] for s in scores),
                          "score_images": scorer.images if needs_data else None,
                          **{k: result.details[k] for k in ("heads_removed", "neurons_removed", "embedding_removed")},
                          "allocation": {k: v for k, v in result.details.get("allocation", {}).items() if k != "candidates"}}


def taylor_gradients(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Gradients of the batch-mean cross-entropy summed over ``batches``, by parameter name — what the
    torch-pruning example accumulates before ``GroupTaylorImportance`` reads ``param.grad``."""
    work = copy.deepcopy(model).eval()
    work.zero_grad(set_to_none=True)
    for images, labels in batches:
        nn.functional.cross_entropy(work(images), labels).backward()
    return {n: p.grad.detach().clone() for n, p in work.named_parameters() if p.grad is not None}


def tp_prune(model: nn.Module, config: Config, ratio: float, grads: dict | None, shape) -> tuple[nn.Module, list[Cut]]:
    """One torch-pruning MetaPruner pass at ``ratio`` on a copy of ``model``; the pruned copy and its
    removed indices as neurotomy cuts (heads, neurons, embedding channels)."""
    work = copy.deepcopy(model).eval()
    if grads is not None:
        for name, parameter in work.named_parameters():
            parameter.grad = grads[name].clone() if name in grads else None
    sites = attention_sites(work)
    names = {module: name for name, module in work.named_modules()}
    projections = {s.proj_name: s for s in sites}
    fc1 = {m.fc1_name: m.fc1_name for m in mlp_sites(work)}
    fc2 = {m.fc2_name: m.fc1_name for m in mlp_sites(work)}
    ignored = [work.get_submodule(n) for n in default_ignored(work)]
    if config.units == "heads+neurons":  # the example's --bottleneck: the residual stream stays whole
        ignored += [work.get_submodule(n) for n in fc2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "unwrapped parameters detected": cls_token / pos_embed, pruned as meant
        pruner = tp.pruner.MetaPruner(work, torch.zeros(1, *shape), importance=TP_IMPORTANCE[config.criterion](),
                                      pruning_ratio=ratio, global_pruning=config.scope == "global",
                                      ignored_layers=ignored, num_heads={s.module.qkv: s.num_heads for s in sites},
                                      prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio)
        cuts: list[Cut] = []
        for group in pruner.step(interactive=True):
            dep, idxs = group[0].dep, sorted(int(i) for i in group[0].idxs)
            name, out = names[dep.target.module], pruner.DG.is_out_channel_pruning_fn(dep.handler)
            if name in projections and not out:  # an attention group rooted at proj's inputs: whole heads
                site = projections[name]
                heads = sorted({i // site.head_dim for i in idxs})
                if len(heads) * site.head_dim != len(idxs):
                    raise NeurotomyError(f"torch-pruning removed part of a head of {site.name}; the baseline "
                                         "expects whole heads (prune_num_heads=True)")
                cuts.append(HeadCut(site.name, heads))
            elif (name in fc1 and out) or (name in fc2 and not out):
                cuts.append(Cut(fc1.get(name) or fc2[name], idxs))
            else:  # the residual stream's group (rooted wherever torch-pruning put it)
                cuts.append(EmbeddingCut(sites[0].proj_name, idxs))
            group.prune()
    for site in attention_sites(work):  # as the example does after pruning
        site.module.num_heads = pruner.num_heads[site.module.qkv]
    return work, cuts


def cut_tp(model: nn.Module, config: Config, target: float, grads: dict | None, shape) -> tuple[nn.Module, dict]:
    """torch-pruning's recipe with ``pruning_ratio`` bisected to land on ``target``; returns the model
    rebuilt through neurotomy's surgery from torch-pruning's indices (checked bit-identical)."""
    pruned, cuts, ratio, _, tries = bisect_ratio(lambda r: tp_prune(model, config, r, grads, shape),
                                                 count_macs_params(model, shape)[0], shape, target, TP_TOLERANCE,
                                                 16, what=f" for {config.name}")
    rebuilt = apply_transformer_cuts(model, cuts, shape)
    identical = require_identical(pruned, rebuilt, f"{config.name}: ")
    removed = {f: sum(len(c.idxs) for c in cuts if isinstance(c, kind)) for f, kind in
               (("heads_removed", HeadCut), ("embedding_removed", EmbeddingCut))}
    neurons = sum(len(c.idxs) for c in cuts if not isinstance(c, (HeadCut, EmbeddingCut)))
    return rebuilt, {"ratio": ratio, "head_pruning_ratio": ratio, "bisection": tries, "baseline_rebuilt_identical":
                     identical, "neurons_removed": neurons, **removed}


def architecture(model: nn.Module) -> dict:
    """Heads per block, MLP width per block and the residual-stream width of a (pruned) ViT."""
    return {"heads": [s.num_heads for s in attention_sites(model)],
            "mlp_hidden": [m.hidden for m in mlp_sites(model)],
            "width": attention_sites(model)[0].module.qkv.in_features}


# --------------------------------------------------------------------------- fine-tuning

def finetune_config(args) -> TrainConfig:
    return TrainConfig(epochs=args.finetune_epochs, lr=args.finetune_lr, batch_size=128, weight_decay=0.05,
                       schedule="cosine", optimizer="adamw", seed=args.seed, distill_alpha=0.5,
                       distill_temperature=4.0, precision=args.precision, quiet=args.quiet)


def finetune(pruned: nn.Module, teacher: nn.Module, train, test, args, state_path: Path) -> dict:
    """Fine-tune ``pruned`` in place, test accuracy after every epoch; epochs saved in ``state_path``
    (an interrupted fine-tune of the same cut continues from its last epoch)."""
    accuracy: dict[int, float] = {}

    def after_epoch(model: nn.Module, epoch: int) -> None:
        accuracy[epoch + 1] = evaluate(model, test, quiet=True, device=args.device)["accuracy"]
        model.train()
        if not args.quiet:
            print(f"    epoch {epoch + 1}: test accuracy {accuracy[epoch + 1]:.4f}", flush=True)

    start = time.perf_counter()
    untouched = copy.deepcopy(pruned.state_dict())
    state = RunState(state_path, resume=state_path.exists())
    try:
        with state:
            history = fit(pruned, train, finetune_config(args), teacher=teacher, on_epoch_end=after_epoch,
                          description="fine-tune", state=state, state_key="finetune", device=args.device)
    except ResumeError as exc:  # the cut came out different (other threads or data): start the fine-tune over
        print(f"    {exc}; fine-tuning from the cut again", file=sys.stderr)
        state_path.unlink(missing_ok=True)
        pruned.load_state_dict(untouched)
        return finetune(pruned, teacher, train, test, args, state_path)
    final = evaluate(pruned, test, quiet=True, device=args.device)["accuracy"]
    pruned.cpu()
    teacher.cpu()
    return {"acc_finetuned": final, "acc_by_epoch": {str(k): v for k, v in sorted(accuracy.items())},
            "train_history": history, "finetune_seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------- the stages

def accuracy_stage(model, train, test, shape, configs, args, results: dict, save) -> bool:
    """Cut, evaluate, fine-tune and save every configuration × target not yet in ``results``;
    whether it measured anything."""
    acc_original = results["acc_original"]
    records = {r["key"]: r for r in results["records"]}
    scorer = Scorer(model, train, args.score_images, args.seed, args.quiet)
    score_batches = list(iterate_batches(train, 64, shuffle=True, generator=torch.Generator().manual_seed(args.seed),
                                         max_images=args.score_images or 640))
    grads = None
    build = Path(args.build)
    build.mkdir(parents=True, exist_ok=True)
    macs0, params0 = count_macs_params(model, shape)
    measured = False
    for config in configs:
        for target in args.targets:
            key = record_key(config, target)
            if key in records and records[key].get("acc_finetuned") is not None:
                continue
            if args.only and not any(o in key for o in args.only):
                continue
            stamp = begin_stamp()
            seed_everything(args.seed)
            start = time.perf_counter()
            if config.method == "ours":
                pruned, details = cut_ours(model, config, target, scorer, shape)
            else:
                if config.criterion == "taylor" and grads is None:
                    grads = taylor_gradients(model, score_batches)
                pruned, details = cut_tp(model, config, target, grads if config.criterion == "taylor" else None, shape)
                details.update(baseline_kind="torch-pruning MetaPruner (prune_num_heads, global, bisected ratio)",
                               score_images=sum(len(y) for _, y in score_batches) if config.criterion == "taylor"
                               else None)
            cut_seconds = time.perf_counter() - start
            macs1, params1 = count_macs_params(pruned, shape)
            acc_pruned = evaluate(pruned, test, quiet=True, device=args.device)["accuracy"]
            pruned.cpu()
            print(f"{config.label:>55} −{target:.0%}: MACs −{1 - macs1 / macs0:.1%} cut {acc_pruned:.4f} "
                  f"({cut_seconds:.0f} s)", flush=True)
            teacher = copy.deepcopy(model).eval()
            tuned = finetune(pruned, teacher, train, test, args, build / f"{slug(key)}.resume")
            checkpoint = save_checkpoint(pruned, build / f"{slug(key)}.safetensors")
            row = {"key": key, "method": "ours" if config.method == "ours" else "torch-pruning",
                   "criterion": config.criterion if config.method == "ours" else f"tp-{config.criterion}",
                   "units": config.units, "scope": config.scope, "round_to": config.round_to,
                   "target_macs_reduction": target, "macs_before": macs0, "macs_after": macs1,
                   "macs_reduction": 1 - macs1 / macs0, "macs_ratio": macs0 / macs1, "params_before": params0, "params": params1,
                   "params_reduction": 1 - params1 / params0, "acc_original": acc_original, "acc_pruned": acc_pruned,
                   **tuned, "finetune_epochs": args.finetune_epochs, "speedup_batch64": None,
                   "speedup_meets_target": None, **details, "architecture": architecture(pruned),
                   "cut_seconds": cut_seconds, "checkpoint": str(checkpoint), **end_stamp(stamp)}
            print(f"{'':>55}  after {args.finetune_epochs} epochs: {tuned['acc_finetuned']:.4f} "
                  f"({tuned['finetune_seconds']:.0f} s)", flush=True)
            records[key] = row
            results["records"] = list(records.values())
            save(results)
            measured = True
    return measured


def ranked(records: list[dict], method: str, target: float, epochs: int, units: str | None = None) -> list[dict]:
    """The fine-tuned records of ``method`` at ``target`` (and ``units``), best accuracy first."""
    return sorted((r for r in records if r["method"] == method and r["target_macs_reduction"] == target
                   and r.get("acc_finetuned") is not None and r["finetune_epochs"] == epochs
                   and (units is None or r["units"] == units)), key=lambda r: -r["acc_finetuned"])


def best(records: list[dict], method: str, target: float, epochs: int, units: str | None = None) -> dict | None:
    return next(iter(ranked(records, method, target, epochs, units)), None)


def explanation_stage(model, test, args, results: dict, save) -> bool:
    """Deletion/insertion of four methods on the unpruned ViT, same-reasons agreement with the best −50 %
    models; skipped (False) when ``results`` holds them for the same settings."""
    ours = best(results["records"], "ours", 0.5, args.finetune_epochs)
    base = best(results["records"], "torch-pruning", 0.5, args.finetune_epochs)
    compared = [r["key"] for r in (ours, base) if r is not None]
    settings = {"images": args.explain_images, "methods": list(EXPLAIN_METHODS), "compared": compared,
                "seed": args.seed}
    done = results.get("explanations") or {}
    if done.get("settings") == settings and not args.redo_explanations:
        return False
    stamp = begin_stamp()
    subset = balanced_subset(test, args.explain_images, seed=args.seed)
    images, labels = batch_at(subset, torch.arange(len(subset)))
    rated = rate_explanations(model, images, None, methods=EXPLAIN_METHODS, metrics=("deletion", "insertion"),
                              seed=args.seed, quiet=args.quiet)
    section = {"settings": settings, "n": int(len(images)), "targets": "the unpruned ViT's predicted classes",
               "unpruned": {m: {**rated["scores"][m], "seconds": rated["seconds"][m]} for m in EXPLAIN_METHODS},
               "better": rated["better"], "agreement": {}}
    for key in compared:
        pruned = load_model(next(r for r in results["records"] if r["key"] == key)["checkpoint"]).eval()
        agreement = compare_reasons(model, pruned, images, None, methods=EXPLAIN_METHODS, seed=args.seed,
                                    quiet=args.quiet)
        section["agreement"][key] = {"prediction_agreement": agreement["prediction_agreement"], "top": agreement["top"],
                                     **{m: {"spearman": v["spearman"], "iou": v["iou"]}
                                        for m, v in agreement["methods"].items()}}
    results["explanations"] = {**section, **end_stamp(stamp)}
    for method, scores in section["unpruned"].items():
        line = " ".join(f"{key.split('@')[0]} ρ {section['agreement'][key][method]['spearman']:.3f}"
                        for key in compared)
        print(f"{method:>14}: deletion {scores['deletion']:.3f} insertion {scores['insertion']:.3f}  {line}")
    save(results)
    return True


def timing_stage(model, test, args, results: dict, save) -> bool:
    """The ``--timing-method`` run: :func:`interleaved_timing_stage` (the issue's measure, every model in
    this process) or :func:`isolated_timing_stage` (each model in a fresh process of its own)."""
    stage = isolated_timing_stage if args.timing_method == "isolated" else interleaved_timing_stage
    return stage(model, test, args, results, save)


def isolated_timing_stage(model, test, args, results: dict, save) -> bool:
    """Batch-64 CPU latency with each model alone in a fresh process, as deployed
    (:func:`~neurotomy.jobs.isolated_timing.isolated_latency`: one process per model per round, the
    order alternating between rounds). Kept apart from the in-process figures: each run goes to
    ``isolated_timing_runs`` and a record's ``speedup_batch64_isolated`` is the median over those runs;
    ``speedup_batch64`` (the issue's interleaved measure) is left as it is. ``--child-env KEY=VALUE``
    runs the children with those variables (the C allocator's thresholds change a fresh process's
    latency); such runs are kept per environment in ``speedup_batch64_isolated_by_env`` and only the
    default environment's runs make ``speedup_batch64_isolated``."""
    rows = [r for r in results["records"] if r.get("checkpoint") and Path(r["checkpoint"]).exists()]
    if not rows:
        print("timing: no saved pruned model to time (run the accuracy stage first)")
        return False
    env = dict(item.split("=", 1) for item in args.child_env)
    label = env_label(env)
    if all(label in r.get("speedup_batch64_isolated_by_env", {}) for r in rows) and not args.retime:
        return False
    require_quiet_machine(args.wait_quiet, args.allow_busy)
    stamp = begin_stamp()
    batch = min(64, len(test))
    times = isolated_latency([args.model] + [r["checkpoint"] for r in rows], batch_size=batch,
                             rounds=args.isolated_rounds, inner_rounds=args.rounds, repeats=args.repeats,
                             threads=args.threads, seed=args.seed, env=env)
    original = times[0]
    run = {**end_stamp(stamp), "method": "isolated", "env": env, "env_label": label, "batch": batch,
           "original_median_ms": original["median_ms"], "original_min_ms": original["min_ms"],
           "original_process_median_ms": original["process_median_ms"], "threads": original["threads"],
           "load_average": original["load_average"], "machine_busy": original["machine_busy"],
           "processes_per_model": args.isolated_rounds, "rounds_per_process": args.rounds, "repeats": args.repeats,
           "speedups": {r["key"]: original["median_ms"] / t["median_ms"] for r, t in zip(rows, times[1:])},
           "latency_ms": {r["key"]: t["median_ms"] for r, t in zip(rows, times[1:])},
           "process_median_ms": {r["key"]: t["process_median_ms"] for r, t in zip(rows, times[1:])}}
    runs = results.setdefault("isolated_timing_runs", [])
    runs.append(run)
    for row, t in zip(rows, times[1:]):
        per_run = [r["speedups"][row["key"]] for r in runs if row["key"] in r["speedups"] and r.get("env", {}) == env]
        speedup = statistics.median(per_run)
        row.setdefault("speedup_batch64_isolated_by_env", {})[label] = speedup
        if not env:
            row.update(speedup_batch64_isolated=speedup, speedup_batch64_isolated_runs=per_run,
                       latency_batch64_isolated_ms=t["median_ms"],
                       speedup_isolated_over_macs_ratio=speedup / row["macs_ratio"])
        print(f"{row['key']:>60}: [{label}] {t['median_ms']:7.2f} ms alone, this run {original['median_ms'] / t['median_ms']:.2f}×, "
              f"median of {len(per_run)} run(s) {speedup:.2f}× for MACs ratio {row['macs_ratio']:.2f} "
              f"({speedup / row['macs_ratio']:.2f} of it)")
    print(f"{'original':>60}: {original['median_ms']:7.2f} ms alone ({original['threads']} thread(s), "
          f"load {original['load_average']})")
    save(results)
    return True


# A record's speed figures, written by the timing stages from their runs.
TIMING_FIELDS = ("speedup_batch64", "speedup_batch64_runs", "speedup_batch64_min", "latency_batch64_ms",
                 "latency_batch64_min_ms", "speedup_over_macs_ratio", "speedup_meets_target",
                 "speedup_batch64_isolated", "speedup_batch64_isolated_runs", "latency_batch64_isolated_ms",
                 "speedup_isolated_over_macs_ratio", "speedup_batch64_isolated_by_env")


def archive_timing(results: dict, label: str) -> dict:
    """Move every timing run, and each record's speed figures, under ``timing_history[label]``: for when
    the timed code itself changed (the ViT's attention kernel), so that the medians never mix two
    implementations; the next timing runs start afresh, and nothing measured is dropped.

    >>> results = {"records": [{"key": "a", "speedup_batch64": 1.5, "acc_pruned": 0.9}], "timing_runs": [{"x": 1}]}
    >>> archived = archive_timing(results, "explicit attention")
    >>> results["records"], archived["timing_history"]["explicit attention"]["records"]
    ([{'key': 'a', 'acc_pruned': 0.9}], {'a': {'speedup_batch64': 1.5}})
    """
    history = results.setdefault("timing_history", {})
    if label in history:
        raise NeurotomyError(f"timing_history already holds {label!r}: give --archive-timing another label")
    history[label] = {
        "timing": results.pop("timing", None),
        "timing_runs": results.pop("timing_runs", []),
        "isolated_timing_runs": results.pop("isolated_timing_runs", []),
        "records": {r["key"]: {f: r.pop(f) for f in TIMING_FIELDS if f in r} for r in results.get("records", [])}}
    return results


def env_label(env: dict[str, str]) -> str:
    """``default``, or the children's extra variables as ``KEY=VALUE …`` (sorted)."""
    return " ".join(f"{k}={v}" for k, v in sorted(env.items())) or "default"


def interleaved_timing_stage(model, test, args, results: dict, save) -> bool:
    """Batch-64 CPU latency of the original and every saved model, interleaved; skipped (False) when every
    record is timed, unless ``--retime``. Every run is kept in ``timing_runs`` and a record's
    ``speedup_batch64`` is the median over the runs that timed it: on this machine the same two models
    measured 1.59× at 16:39 and 1.82–2.11× in five fresh processes three hours later (the original's
    median 64 → 84–116 ms, the load 0.9–1.3 each time), so no single run is the answer, and none is
    dropped."""
    rows = [r for r in results["records"] if r.get("checkpoint") and Path(r["checkpoint"]).exists()]
    if not rows:
        print("timing: no saved pruned model to time (run the accuracy stage first)")
        return False
    if all(r.get("speedup_batch64") is not None for r in rows) and not args.retime:
        return False
    require_quiet_machine(args.wait_quiet, args.allow_busy)
    stamp = begin_stamp()
    images = batch_at(test, torch.arange(min(64, len(test))))[0]
    models = [model.eval()] + [load_model(r["checkpoint"]).eval() for r in rows]

    def call(m: nn.Module):
        def run():
            with torch.inference_mode():
                m(images)
        return run

    times = interleaved_timing([call(m) for m in models], rounds=args.rounds, repeats=args.repeats,
                               threads=args.threads)
    original = times[0]
    # the stamp first: the timed runs' threads below replace the process's own
    run = {**end_stamp(stamp), "batch": int(len(images)), "original_median_ms": original["median_ms"],
           "original_min_ms": original["min_ms"], "threads": original["threads"],
           "load_average": original["load_average"], "machine_busy": original["machine_busy"],
           "rounds": args.rounds, "repeats": args.repeats,
           "speedups": {r["key"]: original["median_ms"] / t["median_ms"] for r, t in zip(rows, times[1:])},
           "speedups_min": {r["key"]: original["min_ms"] / t["min_ms"] for r, t in zip(rows, times[1:])},
           "latency_ms": {r["key"]: t["median_ms"] for r, t in zip(rows, times[1:])},
           "latency_min_ms": {r["key"]: t["min_ms"] for r, t in zip(rows, times[1:])}}
    runs = results.setdefault("timing_runs", [])
    if not runs and results.get("timing"):  # a file timed before runs were kept: its one run comes first
        runs.append(earlier_timing_run(results["timing"], results["records"]))
    runs.append(run)
    results["timing"] = {**run, "speedup": "median over timing_runs of original median / pruned median at batch 64 "
                                           "(speedup_batch64_min: of the minima); this is the latest run"}
    for row, t in zip(rows, times[1:]):
        per_run = [r["speedups"][row["key"]] for r in runs if row["key"] in r.get("speedups", {})]
        speedup = statistics.median(per_run)
        row.update(speedup_batch64=speedup, speedup_batch64_runs=per_run,
                   speedup_batch64_min=statistics.median(r["speedups_min"][row["key"]] for r in runs
                                                         if row["key"] in r.get("speedups_min", {})),
                   latency_batch64_ms=t["median_ms"], latency_batch64_min_ms=t["min_ms"],
                   speedup_over_macs_ratio=speedup / row["macs_ratio"],
                   speedup_meets_target=speedup >= SPEED_FACTOR * row["macs_ratio"])
        print(f"{row['key']:>60}: {t['median_ms']:7.2f} ms, this run {original['median_ms'] / t['median_ms']:.2f}×, "
              f"median of {len(per_run)} run(s) {speedup:.2f}× for MACs ratio {row['macs_ratio']:.2f} "
              f"({speedup / row['macs_ratio']:.2f} of it)")
    print(f"{'original':>60}: {original['median_ms']:7.2f} ms ({original['threads']} threads, "
          f"load {original['load_average']})")
    save(results)
    return True


def earlier_timing_run(timing: dict, records: list[dict]) -> dict:
    """The one timing run of a file written before ``timing_runs`` existed, rebuilt from its ``timing``
    section and the speed-ups its records carry."""
    timed = [r for r in records if r.get("speedup_batch64") is not None]
    return {**{k: v for k, v in timing.items() if k != "speedup"},
            "speedups": {r["key"]: r["speedup_batch64"] for r in timed},
            "speedups_min": {r["key"]: r["speedup_batch64_min"] for r in timed if r.get("speedup_batch64_min")},
            "latency_ms": {r["key"]: r["latency_batch64_ms"] for r in timed if r.get("latency_batch64_ms")},
            "latency_min_ms": {r["key"]: r["latency_batch64_min_ms"] for r in timed if r.get("latency_batch64_min_ms")}}


# --------------------------------------------------------------------------- seeds

def changed_setting(before: dict, settings: dict, ignore: tuple[str, ...] = ()) -> tuple | None:
    """The first setting (``name``, then, now) in which ``before`` differs from ``settings``, else None;
    nested settings are named ``outer.inner`` (e.g. ``finetune.seed``), and ``ignore`` takes such names."""
    flat = lambda d: {f"{k}.{j}" if isinstance(v, dict) else k: w  # noqa: E731
                      for k, v in d.items() for j, w in (v.items() if isinstance(v, dict) else [(None, v)])}
    then, now = flat({k: before.get(k) for k in settings}), flat(settings)
    return next(((k, then.get(k), now[k]) for k in now if k not in ignore and then.get(k) != now[k]), None)


def read_repeats(paths: list[str], settings: dict) -> list[dict]:
    """The fine-tuned records of other seeds' runs of this benchmark (same settings but the seed), with
    their seed and provenance: a 0.2-pt lead is within one seed's noise, so the comparison is repeated."""
    repeats = []
    for path in paths:
        other = json.loads(Path(path).read_text())
        changed = changed_setting(other, settings, ignore=("seed", "finetune.seed"))
        if changed:
            raise NeurotomyError(f"{path} was measured with {changed[0]}={changed[1]!r}, this run has "
                                 f"{changed[2]!r}: only the seed may differ between repeats")
        if other["seed"] == settings["seed"]:
            raise NeurotomyError(f"{path} has this run's seed {settings['seed']}: a repeat needs another --seed")
        repeats += [{"seed": other["seed"], "source": Path(path).name,
                     **{k: r.get(k) for k in ("key", "method", "criterion", "units", "scope", "target_macs_reduction",
                                             "macs_reduction", "acc_pruned", "acc_finetuned", "finetune_epochs",
                                             "provenance")}}
                    for r in other["records"] if r.get("acc_finetuned") is not None]
    return repeats


def lead_over_seeds(results: dict, ours: dict, base: dict) -> dict | None:
    """Ours minus the baseline at −50 % (points) for every seed that ran both configurations."""
    by_seed = {results["seed"]: {r["key"]: r["acc_finetuned"] for r in results["records"]
                                 if r.get("acc_finetuned") is not None}}
    for r in results.get("seed_repeats", []):
        by_seed.setdefault(r["seed"], {})[r["key"]] = r["acc_finetuned"]
    seeds = sorted(s for s, accs in by_seed.items() if ours["key"] in accs and base["key"] in accs)
    if len(seeds) < 2:
        return None
    leads = [(by_seed[s][ours["key"]] - by_seed[s][base["key"]]) * 100 for s in seeds]
    mean = sum(leads) / len(leads)
    sd = (sum((x - mean) ** 2 for x in leads) / (len(leads) - 1)) ** 0.5
    return {"seeds": seeds, "values": leads, "value": mean, "mean": mean, "sd": sd,
            "ours_acc": [by_seed[s][ours["key"]] for s in seeds], "baseline_acc": [by_seed[s][base["key"]] for s in seeds],
            "ours": ours["key"], "baseline": base["key"], "target": "mean ≥ 0", "met": mean >= 0}


# --------------------------------------------------------------------------- targets and plot

def check_targets(results: dict, epochs: int) -> dict:
    """The issue's targets: value, target, met (None where not measured yet)."""
    records, original = results["records"], results["acc_original"]
    ours, base = best(records, "ours", 0.5, epochs), best(records, "torch-pruning", 0.5, epochs)
    out: dict = {"note": None if epochs == 3 else f"fine-tuned {epochs} epochs, not the issue's 3"}
    gap = None if ours is None else (original - ours["acc_finetuned"]) * 100
    out["acc_drop_at_50_pts"] = {"value": gap, "target": f"≤ {ACC_TOLERANCE_PTS}", "config": ours and ours["key"],
                                 "met": None if gap is None else gap <= ACC_TOLERANCE_PTS}
    lead = None if ours is None or base is None else (ours["acc_finetuned"] - base["acc_finetuned"]) * 100
    out["ours_minus_baseline_at_50_pts"] = {"value": lead, "target": "≥ 0", "ours": ours and ours["key"],
                                            "baseline": base and base["key"],
                                            "met": None if lead is None else lead >= 0}
    # the figures measured on one configuration only (seed repeats, isolated timing) are judged on the best of our
    # −50 % configurations that has them, named in the entry — not dropped when another edges ahead on one seed
    ours_ranked = ranked(records, "ours", 0.5, epochs)
    if lead is not None:
        out["ours_minus_baseline_at_50_pts_over_seeds"] = next(
            (found for found in (lead_over_seeds(results, r, base) for r in ours_ranked) if found), None)
    for units in ("heads+neurons", "all"):  # like for like
        a, b = best(records, "ours", 0.5, epochs, units), best(records, "torch-pruning", 0.5, epochs, units)
        if a and b:
            out[f"ours_minus_baseline_at_50_pts ({units})"] = {
                "value": (a["acc_finetuned"] - b["acc_finetuned"]) * 100, "target": "≥ 0", "ours": a["key"],
                "baseline": b["key"], "met": a["acc_finetuned"] >= b["acc_finetuned"]}
    timed = [r for r in records if r.get("speedup_batch64") is not None]
    out["speedup_vs_macs_ratio"] = {
        "target": f"speedup_batch64 ≥ {SPEED_FACTOR} × macs_ratio (macs_ratio = original MACs / pruned MACs)",
        "met_count": sum(bool(r["speedup_meets_target"]) for r in timed), "timed": len(timed),
        "worst": min(({"key": r["key"], "speedup_over_macs_ratio": r["speedup_over_macs_ratio"]} for r in timed),
                     key=lambda d: d["speedup_over_macs_ratio"], default=None),
        "met": (all(r["speedup_meets_target"] for r in timed) if timed else None)}
    if ours is not None and ours.get("speedup_batch64") is not None:
        out["speedup_vs_macs_ratio_at_50"] = {"value": ours["speedup_over_macs_ratio"], "target": f"≥ {SPEED_FACTOR}",
                                              "config": ours["key"], "met": ours["speedup_meets_target"]}
    alone = next((r for r in ours_ranked if r.get("speedup_batch64_isolated") is not None), None)
    if alone is not None:  # beside the figure, not for it
        value = alone["speedup_isolated_over_macs_ratio"]
        out["speedup_vs_macs_ratio_at_50_isolated"] = {
            "value": value, "target": f"≥ {SPEED_FACTOR}", "config": alone["key"], "met": value >= SPEED_FACTOR,
            "note": "each model timed alone in fresh processes (isolated_timing_runs); the issue's target is judged "
                    "on speedup_vs_macs_ratio_at_50 (all models interleaved in one process)",
            "by_env": {label: speedup / alone["macs_ratio"]
                       for label, speedup in alone.get("speedup_batch64_isolated_by_env", {}).items()}}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    records = results["records"]
    timed = [r for r in records if r.get("speedup_batch64") is not None]
    explained = results.get("explanations")
    panels = 2 + bool(timed) + bool(explained)
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 4.8), squeeze=False)
    axes = axes[0]
    ours_colours = iter(plt.get_cmap("tab10").colors)
    base_colours = iter(("black", "dimgrey", "darkgrey", "silver"))
    colours = {}
    for row in sorted(records, key=lambda r: (r["method"] != "ours", r["key"])):
        name = row["key"].split("@")[0]
        if name not in colours:
            colours[name] = next(ours_colours if row["method"] == "ours" else base_colours)
    original = 100 * results["acc_original"]
    for ax, field, title in ((axes[0], "acc_pruned", "right after the cut (no recovery: LayerNorm only)"),
                             (axes[1], "acc_finetuned", "after the same fine-tune (AdamW + distillation)")):
        for name, colour in colours.items():
            rows = sorted((r for r in records if r["key"].split("@")[0] == name), key=lambda r: r["macs_reduction"])
            label = f"{rows[0]['criterion']} ({rows[0]['units']}, {rows[0]['scope']})"
            ax.plot([100 * r["macs_reduction"] for r in rows], [100 * r[field] for r in rows], marker="o",
                    color=colour, lw=2 if rows[0]["method"] == "ours" else 2.5, label=label,
                    ls="-" if rows[0]["method"] == "ours" else "--")
        ax.axhline(original, color="grey", ls=":", label=f"unpruned {original:.2f} %")
        ax.set_xlabel("MACs reduction (%)")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel(f"test accuracy (%, {results['test_images']} images)")
    axes[0].set_ylim(0, 100)
    axes[1].axhline(original - ACC_TOLERANCE_PTS, color="grey", ls="-.", lw=0.8, label="unpruned − 1 pt")
    epochs = {r["finetune_epochs"] for r in records}
    axes[1].set_title(f"after {'/'.join(map(str, sorted(epochs)))} fine-tune epochs (AdamW + distillation)", fontsize=9)
    tuned = [100 * r["acc_finetuned"] for r in records]
    axes[1].set_ylim(max(0, min(tuned, default=original) - 2), max(tuned + [original]) + 1)
    axes[1].legend(fontsize=7, loc="lower left")
    panel = 2
    if timed:
        ax = axes[panel]
        panel += 1
        for name, colour in colours.items():
            rows = [r for r in timed if r["key"].split("@")[0] == name]
            ax.plot([r["macs_ratio"] for r in rows], [r["speedup_batch64"] for r in rows], "o", color=colour)
            alone = [r for r in rows if r.get("speedup_batch64_isolated") is not None]
            ax.plot([r["macs_ratio"] for r in alone], [r["speedup_batch64_isolated"] for r in alone], "s",
                    mfc="none", color=colour)
        top = max(max(r["macs_ratio"] for r in timed), max(r["speedup_batch64"] for r in timed)) * 1.1
        top = max([top] + [1.1 * r["speedup_batch64_isolated"] for r in timed if r.get("speedup_batch64_isolated")])
        if any(r.get("speedup_batch64_isolated") is not None for r in timed):
            ax.plot([], [], "s", mfc="none", color="grey", label="□ each model alone in fresh processes")
        ax.plot([1, top], [1, top], color="grey", ls=":", label="speed-up = MACs ratio")
        ax.plot([1, top], [SPEED_FACTOR, SPEED_FACTOR * top], color="grey", ls="--",
                label=f"target {SPEED_FACTOR} × MACs ratio")
        t = results["timing"]
        ax.set_title(f"CPU batch 64, {t['threads']} thread(s), interleaved, load {t['load_average'][0]:.2f} → "
                     f"{t['load_average'][1]:.2f}", fontsize=9)
        ax.set_xlabel("MACs ratio (original / pruned)")
        ax.set_ylabel("measured speed-up (median)")
        ax.legend(fontsize=7)
    if explained:
        ax = axes[panel]
        methods = list(explained["unpruned"])
        series = [("deletion ↓", [explained["unpruned"][m]["deletion"] for m in methods]),
                  ("insertion ↑", [explained["unpruned"][m]["insertion"] for m in methods])]
        for key, values in explained["agreement"].items():
            series.append((f"ρ vs {key.split('@')[0]}", [values[m]["spearman"] for m in methods]))
        width = 0.8 / len(series)
        for j, (label, values) in enumerate(series):
            ax.bar([i + (j - (len(series) - 1) / 2) * width for i in range(len(methods))], values, width, label=label)
        ax.set_xticks(range(len(methods)), methods, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"explanations on {explained['n']} test images: deletion/insertion (unpruned), "
                     "same-reasons ρ (−50 %)", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(f"{results['model']} — heads / MLP neurons / embedding pruning vs torch-pruning", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- main

def smoke_model(path: Path) -> Path:
    """A tiny random ViT (2 blocks, width 32, 4 heads, MLP 48) saved as a checkpoint: the smoke run's model."""
    torch.manual_seed(0)
    model = build_model("vit_tiny", 1, 10, 28, dim=32, depth=2, num_heads=4, mlp_hidden=48)
    model.neurotomy_meta.dataset = "fashion-mnist"
    return save_checkpoint(model, path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "fashion-mnist"),
                        help="Fashion-MNIST IDX directory (default: ../shared/data/fashion-mnist beside the repo)")
    parser.add_argument("--model", default=None, help="the ViT (default zoo:vit-tiny-fmnist; --smoke: a tiny random one)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                        help="method:criterion:units:scope, e.g. ours:taylor:heads+neurons:global, "
                             "ours:taylor+taylor+l1:all:global, tp:l2:all:global")
    parser.add_argument("--only", nargs="*", default=[], help="run only records whose key contains one of these")
    parser.add_argument("--targets", nargs="+", type=float, default=list(TARGETS), help="MACs reductions")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=3e-4,
                        help="AdamW peak lr, cosine to 0 (default 3e-4: of 1e-4, 3e-4, 1e-3 the best for both ours and "
                             "the baseline in a 1-epoch trial on 16k images)")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"),
                        help="fine-tune under bf16 autocast (as zoo:vit-tiny-fmnist was trained; halves a step on "
                             "AMX CPUs) or fp32; evaluation is always fp32")
    parser.add_argument("--score-images", type=int, default=640,
                        help="training images for data criteria and torch-pruning's Taylor gradients")
    parser.add_argument("--max-train", type=int, default=None, help="class-balanced training subset (trial runs)")
    parser.add_argument("--max-test", type=int, default=None, help="class-balanced test subset (trial runs)")
    parser.add_argument("--explain-images", type=int, default=100)
    parser.add_argument("--redo-explanations", action="store_true")
    parser.add_argument("--retime", action="store_true", help="time again (another run, kept with the others) though every record is timed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the timed runs (default 1)")
    parser.add_argument("--train-threads", type=int, default=None, help="torch threads for cutting and fine-tuning")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (with --timing-method isolated: "
                        "per process)")
    parser.add_argument("--timing-method", default="interleaved", choices=("interleaved", "isolated"),
                        help="interleaved: every model in this process, alternating (the issue's measure); "
                             "isolated: each model in a fresh process of its own, as deployed (kept apart)")
    parser.add_argument("--isolated-rounds", type=int, default=5, help="processes per model (isolated timing)")
    parser.add_argument("--child-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="isolated timing: extra environment of every child (e.g. MALLOC_TRIM_THRESHOLD_=4000000000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--archive-timing", metavar="LABEL", default=None,
                        help="first move every timing run and speed figure under timing_history[LABEL] (when the "
                             "timed code changed, e.g. 'explicit attention (before fb87ba2)'), then time afresh")
    parser.add_argument("--wait-quiet", type=float, default=600, help="seconds to wait for a quiet machine")
    parser.add_argument("--allow-busy", action="store_true", help="time a busy machine anyway (load recorded)")
    parser.add_argument("--device", default="cpu", help="device for fine-tuning and evaluation (timing is CPU)")
    parser.add_argument("--build", default=None, help="where pruned models and fine-tune states go "
                        "(default build/vit_bench for the published run, OUT/build for any other --out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat-runs", nargs="*", default=[],
                        help="vit.json files of this benchmark run with other --seed values and the same settings: "
                             "their records are kept under `seed_repeats`, and ours-vs-baseline at −50 %% is also judged "
                             "on the mean over every seed")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny settings for a trial ({SMOKE}); refuses to write into benchmarks/results")
    parser.add_argument("--out", default=str(RESULTS), help="directory for vit.json and vit.png")
    args = parser.parse_args(argv)
    bad = next((item for item in args.child_env if "=" not in item or not item.split("=", 1)[0]), None)
    if bad is not None:
        parser.error(f"--child-env {bad!r}: give KEY=VALUE, e.g. MALLOC_TRIM_THRESHOLD_=4000000000")
    if args.smoke:
        if Path(args.out).resolve() == RESULTS.resolve():
            parser.error("--smoke writes trial numbers: give --out elsewhere (e.g. /tmp/vit-smoke)")
        for name, value in SMOKE.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    # the published run keeps its models in build/vit_bench; any other --out keeps its own beside it
    default_out = Path(args.out).resolve() == RESULTS.resolve()
    args.build = args.build or str(REPO / "build" / "vit_bench" if default_out else Path(args.out) / "build")
    try:
        args.configs = [parse_config(c) for c in args.configs]
    except NeurotomyError as exc:
        parser.error(str(exc))
    for name in ("finetune_epochs", "score_images", "explain_images", "threads", "rounds", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if any(not 0 < t < 1 for t in args.targets):
        parser.error("--targets are MACs reductions between 0 and 1, e.g. 0.3 0.5 0.7")
    if not Path(args.root).is_dir():
        parser.error(f"no Fashion-MNIST at {args.root}; pass --root DIR")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    json_path, png_path = out / "vit.json", out / "vit.png"
    if args.train_threads:
        torch.set_num_threads(args.train_threads)
    if args.model is None:
        args.model = str(smoke_model(Path(args.build) / "smoke-vit.safetensors")) if args.smoke else "zoo:vit-tiny-fmnist"
    model = load_model(args.model).eval()
    if not attention_sites(model):
        raise NeurotomyError(f"{args.model} has no attention layer: this benchmark prunes Vision Transformers; "
                             "give a ViT with --model")
    meta = model.neurotomy_meta
    shape = meta.input_shape
    dataset = meta.dataset or "fashion-mnist"
    train = balanced_subset(load_dataset(dataset, root=args.root, split="train"), args.max_train, seed=args.seed)
    test = balanced_subset(load_dataset(dataset, root=args.root, split="test"), args.max_test, seed=args.seed)
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    finetune_settings = {**{k: v for k, v in finetune_config(args).settings().items() if not k.startswith("grad_mask")},
                         "teacher": "the unpruned ViT", "loss": "(1 − α)·CE + α·T²·KL(student/T ‖ teacher/T)",
                         "same_for_all": True}
    settings = {"model": args.model, "train_images": len(train), "test_images": len(test),
                "finetune": finetune_settings, "score_images": args.score_images, "seed": args.seed}
    if results.get("records"):  # records of other settings would be skipped as done and mixed with these
        changed = changed_setting(results, settings)
        if changed:
            raise NeurotomyError(f"{json_path} was measured with {changed[0]}={changed[1]!r}, this run has "
                                 f"{changed[2]!r}; give another --out, or the settings of that run")
    if args.repeat_runs:
        results["seed_repeats"] = read_repeats(args.repeat_runs, settings)
    if args.archive_timing:
        archive_timing(results, args.archive_timing)
    if "acc_original" not in results:
        results["acc_original"] = evaluate(model, test, quiet=True, device=args.device)["accuracy"]
        model.cpu()
    macs, params = count_macs_params(model, shape)
    results.update({
        "question": "heads, MLP neurons and embedding channels of a ViT: our criteria vs torch-pruning's ViT recipe "
                    "at the same MACs, before and after the same fine-tune; CPU speed-up vs MACs ratio; "
                    "explanation quality and how much explanations move after pruning",
        "machine": machine(), "dataset": dataset, "architecture": architecture(model), "macs": macs, "params": params,
        **settings,
        "smoke": args.smoke, "recovery": "none before fine-tuning: LayerNorm keeps no running statistics "
                                         "(BN-free recovery), so acc_pruned is the cut model as it is",
        "baseline": "torch-pruning MetaPruner as in its examples/transformers/prune_timm_vit.py: GroupTaylor"
                    "Importance (gradients of the batch-mean CE on the score images) or GroupMagnitudeImportance(p=2), "
                    "num_heads={qkv: heads}, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio = "
                    "pruning_ratio (the example fixes 0.5), global ranking, classifier ignored; units=all prunes the "
                    "residual stream (its default), heads+neurons ignores every fc2 (its --bottleneck); the ratio is "
                    f"bisected to within {TP_TOLERANCE} of the MACs target; the model is rebuilt through neurotomy's "
                    "surgery from its indices and checked bit-identical",
        "baseline_kind": "torch-pruning MetaPruner (its actual pruner, not our planner on its importance)",
        "ours": "neurotomy.scores.transformer.score_transformer + neurotomy.surgery.transformer.prune_transformer "
                "(target_macs met by bisection on one ratio per unit family, ±1 pt, re-aimed on the measured model)",
        "definitions": {"macs_reduction": "1 − pruned MACs / original MACs",
                        "macs_ratio": "original MACs / pruned MACs",
                        "speedup_batch64": "original median latency / pruned median latency, batch 64, CPU"},
        "configs": [c.name for c in args.configs],
    })
    results.setdefault("records", [])
    results.setdefault("provenance", {})

    def save(current: dict) -> None:
        current["targets"] = check_targets(current, args.finetune_epochs)
        write_json(json_path, current)
        plot(current, png_path)

    if not args.quiet:
        print(f"{args.model}: test accuracy {results['acc_original']:.4f} on {len(test)} images; "
              f"{len(train)} training images; {machine()}", flush=True)
    for stage in STAGES:
        if stage not in args.stages:
            continue
        stamp = begin_stamp()
        if stage == "accuracy":
            measured = accuracy_stage(model, train, test, shape, args.configs, args, results, save)
        elif stage == "explanations":
            measured = explanation_stage(model, test, args, results, save)
        else:
            measured = timing_stage(model, test, args, results, save)
        if measured:  # a stage with nothing left to do keeps the stamp of the run that measured it
            results["provenance"][stage] = end_stamp(stamp)
    save(results)
    for name, target in results["targets"].items():
        if isinstance(target, dict) and "met" in target:
            value = target.get("value")
            shown = f"{value:.3f}" if isinstance(value, float) else f"{target.get('met_count')}/{target.get('timed')}"
            print(f"{name}: {shown} (target {target['target']}) "
                  f"{'met' if target['met'] else 'not measured' if target['met'] is None else 'NOT met'}")
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    try:
        main()
    except NeurotomyError as exc:  # bad input or a refused run: one line, no traceback
        print(f"vit.py: {exc}", file=sys.stderr)
        sys.exit(2)
