"""Pruning to a budget, ours against Torch-Pruning: zoo:resnet20-fmnist at −50/−70/−85 % MACs and at
1.5/2/3× measured speed-up, before and after the same fine-tune (issue #19, "Benchmark").

Methods (one record each per target; the record's ``key`` is method/criterion/scope/target/reconstruct,
e.g. ``ours/l1/uniform/macs0.85/rec``):

* ``ours`` — :class:`neurotomy.jobs.prune.PruneJob`, exactly what ``neurotomy prune`` runs: the
  criterion's scores (computed once per criterion, on the criterion's default images), the planner's
  allocation (``--scopes``, default uniform) to a MACs target, or the latency knapsack to a
  ``target_speedup`` (scope ``latency``: the knapsack has no scope; latency table at ``--threads`` 1,
  batch 64, cached in ``BUILD/latency``); BatchNorm recalibration on 4,096 training images; with
  ``reconstruct`` the least-squares refit on 2,048 images (``acc_reconstructed``). Each criterion runs
  without and with reconstruction (two PruneJob runs; the cut is deterministic, but a speed-up prune
  re-measures, so ``widths_match_pair`` says whether both got the same widths).
* ``tp-default`` — Torch-Pruning's MetaPruner + MagnitudeImportance(p=1), uniform (its default);
  ``tp-taylor`` — MetaPruner + GroupTaylorImportance, global, gradients of the cross-entropy on 640
  seeded training images (as many as our data criteria see). The pruning ratio is bisected to the MACs
  target (within 0.3 pt, 14 steps at most; ``benchmarks/tp_baselines.py``); the model is rebuilt through
  our surgery from torch-pruning's indices (checked bit-identical) so it is saved like ours. Then the same
  BatchNorm recalibration. At a speed-up target the baselines are cut to the MACs reduction our
  ``--match-criterion`` (l1) speed-up model reached (``matched_to``), so both are compared at about equal
  latency, measured in the timing stage.
* Criteria (``--criteria``, default ``auto``): ``l1`` and ``random``, plus the ``--top`` (4) best of
  ``--rank-among`` (every unit criterion) by recalibrated accuracy at that MACs target and scope, from a
  cheap pass (PruneJob cut + recalibration, no fine-tune; ``ranking`` in the JSON). A speed-up target
  takes the ranking at the MACs target nearest 1 − 1/speed-up (1.5× → −50 %, 2× → −50 %, 3× → −70 %).

The same fine-tune for every record: ``neurotomy.recover.finetune`` with PruneJob's arguments (SGD with
Nesterov momentum 0.9, weight decay 5e-4, batch ``--finetune-batch`` (64), cosine from ``--finetune-lr``
0.005, seed; ``--distill`` (on; ``--no-distill``): KL at T ``--distill-temperature`` (2), weight
``--distill-alpha`` (0.9), from the unpruned model — the recipe that lost least at −85 % MACs over 5 seeds,
``benchmarks/results/pruning_budget_recipes``), one ``--finetune-epochs`` (3) run on the full training set,
test accuracy after every epoch
(``acc_by_epoch``; ``acc_finetuned`` after the last). It runs outside the job only to read accuracy
between epochs; unlike ``neurotomy prune`` it keeps the fine-tuned model even when fine-tuning lowered
accuracy (a benchmark reports what the recipe did).

Iterative cuts (``--steps N``, MACs targets only): ours reaches the target in N equal steps
(``neurotomy.jobs.schedules.prune_iteratively``: re-scored and BN-recalibrated before each next step),
with ``--finetune-between E`` epochs after each step but the last, taken out of ``--finetune-epochs`` so
every record trains as many epochs in all (``finetune_epochs`` is that total; ``finetune_epochs_between``
and ``acc_by_epoch`` — the epochs after the last step — split it). Their keys end in ``/stepsN`` or
``/stepsN+Eep``; they stay out of the Spearman groups (their recalibrated accuracy follows training).

Stages (each resumable; the JSON is written atomically after every record, a record already in it is
skipped, ``--only`` keeps the records whose key matches a pattern — shell-style with ``*``, else a
substring):

* ``cut`` (not run unless asked) — cuts our selected records that have no record yet and keeps each cut
  (model and fields, with its stamp) in ``BUILD/cuts``; the accuracy stage fine-tunes a kept cut made with
  the same settings instead of cutting again (the record's ``provenance.cut``). On a shared machine the
  speed-up cuts, which time candidate widths and need it quiet, are made together in one quiet window, and
  their fine-tunes run beside other jobs.

* ``accuracy`` — cut, recover, fine-tune; the fine-tuned model is saved with its recipe in
  ``BUILD/models`` (reloaded and compared tensor by tensor: ``checkpoint_verified``); the record keeps the
  surgery ``recipe`` too. A speed-up prune times while it cuts, so it first waits for a quiet machine
  (``--wait-quiet``, ``--allow-busy``).
* ``timing`` — waits for a quiet machine before each record, reloads the saved model (where the run
  resumes on a machine without it, the original cut by the record's recipe: the same widths, checked;
  ``timed_from`` says which) and times it against the original at batch 64 with ``--threads`` threads,
  interleaved rounds (:func:`neurotomy.measure.interleaved_latency`): ``speedup_batch64`` (medians), ``speedup_batch64_min``,
  ``threads``, ``load_average`` [start, end]. ``speedup_batch64_predicted``: the latency table's
  prediction (speed-up targets only). ``--retime`` times timed records again: each timing is kept in
  the record's ``timing_runs`` and ``speedup_batch64`` / ``speedup_batch64_min`` are the medians over them
  (the same two saved models measured 1.70× and 1.37× an hour apart on a quiet machine).

``summary`` (:mod:`budget_summary`, recomputed from the records at every write): per MACs target our best against
torch-pruning's best after the fine-tune (a tie within 0.1 pt counts as met), the −85 % loss against
the unpruned model (target ≤ 1.5 pt), the reconstruct-only accuracies against ≥ 93 % (−50 %) and ≥ 88 %
(−70 %) in ≤ 30 s, how many epochs reconstruction saves, each speed-up record's miss (target ±10 %),
accuracy at about equal latency, and the Spearman correlation across criteria between recalibrated
(and reconstructed) accuracy and fine-tuned accuracy, and between each criterion's reconstructed cut and
its plain cut's fine-tuned accuracy (``x_from``: a screen in seconds for the better pipeline; scipy's ρ,
else :func:`spearman`'s own ranks);
``misses`` lists every missed target with its numbers. Each record carries its own provenance stamps
(``provenance.accuracy`` / ``provenance.timing``); ``macs_reduction`` = 1 − pruned/original MACs,
``macs_ratio`` = original/pruned MACs.

Usage: python benchmarks/pruning_budget.py [--root ../shared/data/fashion-mnist] [--stages accuracy timing]
Smoke run (tiny, minutes, writes to a temporary directory): python benchmarks/pruning_budget.py --smoke --allow-busy
Writes benchmarks/results/pruning_budget.json and pruning_budget.png (``--out DIR`` elsewhere for a trial).
Lanes: ``--only`` splits the grid over processes, each with its own ``--out``; ``--out DIR --merge A.json B.json``
joins them (same settings only; a key already in DIR's file is kept).
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_summary import LOSS_AT_85_PTS, best, summarize  # noqa: E402
from pruning_criteria import machine, measure  # noqa: E402
from tp_baselines import TP_TOLERANCE, group_taylor, magnitude_l1, taylor_gradients, tp_bisect  # noqa: E402

from neurotomy.checkpoint import read_meta, save_checkpoint  # noqa: E402
from neurotomy.data import load_dataset  # noqa: E402
from neurotomy.data.subsets import balanced_subset  # noqa: E402
from neurotomy.device import place  # noqa: E402
from neurotomy.errors import NeurotomyError, PruningError  # noqa: E402
from neurotomy.files import write_json  # noqa: E402
from neurotomy.jobs.prune import PruneJob  # noqa: E402
from neurotomy.loading import load_model  # noqa: E402
from neurotomy.measure import interleaved_latency  # noqa: E402
from neurotomy.models.summary import count_macs_params  # noqa: E402
from neurotomy.provenance import begin_stamp, end_stamp  # noqa: E402
from neurotomy.recover import finetune, recalibrate_batchnorm  # noqa: E402
from neurotomy.scores import CRITERIA, get_criterion  # noqa: E402
from neurotomy.surgery.recipe import replay_recipe  # noqa: E402
from neurotomy.timing import BusyMachineError, require_quiet_machine, torch_threads  # noqa: E402
from neurotomy.train import evaluate, seed_everything  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NAME = "pruning_budget"
# the order records run in: −85 % first (the open question), then −50 % (the reconstruct-only target)
MACS_TARGETS = (0.85, 0.5, 0.7)
SPEEDUP_TARGETS = (1.5, 2.0, 3.0)
STAGES = ("cut", "accuracy", "timing")  # run in this order; the default is the last two (cut: lanes on a shared machine)
ALWAYS = ("l1", "random")
LATENCY_BATCH = 64  # the deployment batch; the contract's field names say 64
TP = {"tp-default": ("l1", "uniform", magnitude_l1, False), "tp-taylor": ("taylor", "global", group_taylor, True)}
SMOKE = {"max_train": 512, "max_test": 256, "finetune_epochs": 1, "criteria": ["l1"], "macs_targets": [0.5],
         "speedup_targets": [1.5], "recalibrate_images": 512, "reconstruct_images": 256, "tp_taylor_images": 128,
         "rounds": 3, "repeats": 1, "wait_quiet": 0.0}


@dataclass(frozen=True)
class Spec:
    """One record to measure: ``method`` (ours / tp-default / tp-taylor), ``criterion``, ``scope``
    (uniform / global; ``latency`` for ours at a speed-up), ``kind`` (macs / speedup), ``target``
    (a MACs reduction or a speed-up), ``reconstruct``; ``steps`` > 1: an iterative cut (re-scored and
    BN-recalibrated between steps) with ``between`` fine-tune epochs after each step but the last."""

    method: str
    criterion: str
    scope: str
    kind: str
    target: float
    reconstruct: bool = False
    steps: int = 1
    between: int = 0

    @property
    def key(self) -> str:
        schedule = f"/steps{self.steps}" + (f"+{self.between}ep" if self.between else "") if self.steps > 1 else ""
        return (f"{self.method}/{self.criterion}/{self.scope}/{self.kind}{self.target:g}/"
                f"{'rec' if self.reconstruct else 'norec'}{schedule}")


def selected(key: str, patterns: list[str]) -> bool:
    """Whether ``key`` passes ``--only``: no pattern, or one matching it (``*?[`` shell-style, else a substring)."""
    return not patterns or any(fnmatch.fnmatchcase(key, p) if any(c in p for c in "*?[") else p in key
                               for p in patterns)


def slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]", "_", key)


def conv_widths(model: nn.Module) -> list[int]:
    """Output channels of every Conv2d, in module order (the layers are ``conv_layers`` in the JSON)."""
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def timable(row: dict) -> bool:
    """A record the timing stage can time here: its saved model is on this machine, or it carries the
    surgery recipe that rebuilds the architecture (see :meth:`Budget.timed_model`)."""
    return Path(row["checkpoint"]).exists() or row.get("recipe") is not None


def add_recipes(results: dict) -> int:
    """Give each record whose checkpoint is on this machine but which has no ``recipe`` (written before
    records carried one) the recipe from the checkpoint's metadata, so it can be timed elsewhere; how many."""
    missing = [r for r in results.get("records", []) if "recipe" not in r and Path(r.get("checkpoint", "")).is_file()]
    for row in missing:
        row["recipe"] = read_meta(row["checkpoint"]).recipe
    return len(missing)


def nearest_macs_target(speedup: float, macs_targets: list[float]) -> float:
    """The MACs target whose ranking a speed-up target borrows: nearest to 1 − 1/speed-up."""
    ideal = 1 - 1 / speedup
    return min(macs_targets, key=lambda t: (abs(t - ideal), t)) if macs_targets else round(ideal, 2)


# --------------------------------------------------------------------------- timing runs

def timing_runs_of(row: dict) -> list[dict]:
    """Every timing of a record, oldest first: its ``timing_runs``, or — for a record timed before runs
    were kept — its ``earlier_timings`` and its current figure rebuilt as runs. The same two saved models
    measured 1.70× and then 1.37× an hour apart on a quiet machine, so a record's ``speedup_batch64`` is the
    median over all its runs and no run is dropped."""
    if "timing_runs" in row:
        return list(row["timing_runs"])
    runs = [{"speedup_batch64": e["speedup_batch64"], "load_average": e.get("load_average"), "date": e.get("date")}
            for e in row.pop("earlier_timings", [])]
    if row.get("speedup_batch64") is not None:
        timing = row.get("provenance", {}).get("timing", {})
        runs.append({"speedup_batch64": row["speedup_batch64"], "speedup_batch64_min": row.get("speedup_batch64_min"),
                     "threads": row.get("threads"), "load_average": row.get("load_average"),
                     "machine_busy": row.get("machine_busy"), "date": timing.get("date"),
                     "git_commit": timing.get("git_commit")})
    return runs


# --------------------------------------------------------------------------- the run

class Budget:
    """One run: the model, data, settings and results file; :meth:`accuracy_stage` and :meth:`timing_stage`."""

    def __init__(self, args: argparse.Namespace, model: nn.Module, train, test, results: dict, save) -> None:
        self.args, self.model, self.train, self.test, self.results, self.save = args, model, train, test, results, save
        self.shape = tuple(model.neurotomy_meta.input_shape)
        self.build = Path(args.build)
        self.scores_cache: dict = {}
        self.grads: dict | None = None
        self.original_metrics = {"accuracy": results["acc_original"], "n": len(test)}

    @property
    def schedule(self) -> tuple[int, int]:
        """(steps, fine-tune epochs between steps) of our records in this run."""
        return self.args.steps, self.args.finetune_between

    def ev(self, model: nn.Module) -> float:
        return evaluate(model, self.test, quiet=True)["accuracy"]

    def scores(self, criterion: str):
        if criterion not in self.scores_cache:
            self.scores_cache[criterion] = get_criterion(criterion)(self.model, self.train, seed=self.args.seed,
                                                                    quiet=self.args.quiet)
        return self.scores_cache[criterion]

    def job(self, criterion: str, **amount) -> PruneJob:
        """The PruneJob of a record (or of the ranking pass): our defaults, this run's images and seed."""
        a = self.args
        return PruneJob(criterion=criterion, latency_batch=LATENCY_BATCH, threads=a.threads,
                        latency_cache=str(self.build / "latency"), recalibrate_images=a.recalibrate_images,
                        reconstruct_images=a.reconstruct_images, measure_latency=False, seed=a.seed, quiet=a.quiet,
                        **amount)

    # ------------------------------------------------------------------ which criteria
    def ranking(self, target: float, scope: str) -> list[dict]:
        """Every ``--rank-among`` criterion cut to ``target`` MACs and recalibrated, best first (computed
        once, kept in the JSON)."""
        section = self.results.setdefault("ranking", {}).setdefault(f"{scope}/macs{target:g}", {})
        for name in self.args.rank_among:
            if name in section:
                continue
            stamp = begin_stamp()
            seed_everything(self.args.seed)
            start = time.perf_counter()
            _, rec = self.job(name, target_macs=target, scope=scope).run(
                self.model, self.train, self.test, scores=self.scores(name), original_metrics=self.original_metrics)
            section[name] = {"criterion": name, "acc_pruned": rec["acc_pruned"],
                             "acc_recalibrated": rec["acc_recalibrated"], "macs_reduction": rec["macs_reduction"],
                             "score_seconds": rec["score_seconds"], "seconds": time.perf_counter() - start,
                             "provenance": end_stamp(stamp)}
            print(f"  rank {scope} −{target:.0%} {name:>16}: recalibrated {rec['acc_recalibrated']:.4f}", flush=True)
            self.save(self.results)
        return sorted((section[n] for n in self.args.rank_among), key=lambda r: -r["acc_recalibrated"])

    def criteria_at(self, kind: str, target: float, scope: str) -> list[str]:
        """``--criteria``, or l1, random and the ``--top`` best by recalibrated accuracy — ranked only when
        ``--only`` lets one of the ranked criteria's records run."""
        a = self.args
        if a.criteria:
            return list(a.criteria)
        ranked = [c for c in a.rank_among if c not in ALWAYS]
        wanted = [c for c in ranked if any(selected(Spec("ours", c, scope, kind, target, r, *self.schedule).key, a.only)
                                           for r in a.reconstruct_modes)]
        if not wanted:
            return list(ALWAYS)
        rank_target = target if kind == "macs" else nearest_macs_target(target, a.macs_targets)
        rank_scope = scope if kind == "macs" else a.scopes[0]
        best = [r["criterion"] for r in self.ranking(rank_target, rank_scope) if r["criterion"] not in ALWAYS]
        return list(ALWAYS) + best[:a.top]

    def plan(self) -> list[Spec]:
        """Every record of this run, in run order: per target ours with ``--match-criterion`` (l1) and the
        baselines first, then the other criteria."""
        a, specs = self.args, []
        for kind, targets in (("macs", a.macs_targets), ("speedup", a.speedup_targets)):
            for target in targets:
                first, rest = [], []
                for scope in (a.scopes if kind == "macs" else ["latency"]):
                    for criterion in self.criteria_at(kind, target, scope):
                        for refit in a.reconstruct_modes:
                            spec = Spec("ours", criterion, scope, kind, target, refit, *self.schedule)
                            (first if criterion == a.match_criterion else rest).append(spec)
                for method in a.baselines:
                    criterion, scope, _, _ = TP[method]
                    first.append(Spec(method, criterion, scope, kind, target))
                specs += first + rest
        return specs

    # ------------------------------------------------------------------ the accuracy stage
    def accuracy_stage(self) -> bool:
        done = {r["key"] for r in self.results["records"]}
        measured = False
        for spec in self.plan():
            if spec.key in done or not selected(spec.key, self.args.only):
                continue
            row = self.measure_spec(spec)
            if row is None:
                continue
            self.results["records"].append(row)
            done.add(spec.key)
            self.save(self.results)
            measured = True
        return measured

    def measure_spec(self, spec: Spec) -> dict | None:
        a = self.args
        stamp = begin_stamp()
        seed_everything(a.seed)
        start = time.perf_counter()
        saved_cut = self.kept_cut(spec) if spec.method == "ours" else None
        if saved_cut is not None:  # the cut stage made it (maybe in a quiet window): fine-tune it
            pruned, fields, cut_stamp = saved_cut
            prune_seconds = fields.pop("prune_seconds")
        else:
            cut = self.cut(spec)
            if cut is None:
                return None
            (pruned, fields), cut_stamp, prune_seconds = cut, None, time.perf_counter() - start
        label = {"key": spec.key, "method": spec.method, "criterion": spec.criterion, "scope": spec.scope,
                 "target_macs_reduction": spec.target if spec.kind == "macs" else None,
                 "target_speedup": spec.target if spec.kind == "speedup" else None, "reconstruct": spec.reconstruct}
        row = measure(self.model, pruned, self.shape, self.results["acc_original"], label)
        macs, params = count_macs_params(pruned, self.shape)
        row.update(macs=macs, params=params, widths=conv_widths(pruned), prune_seconds=prune_seconds, **fields)
        print(f"{spec.key:>45}: MACs −{row['macs_reduction']:.1%}, cut {row['acc_pruned']:.4f}, recalibrated "
              f"{row['acc_recalibrated']:.4f}" + (f", reconstructed {row['acc_reconstructed']:.4f}"
                                                  if row["acc_reconstructed"] is not None else "")
              + f" ({prune_seconds:.0f} s)", flush=True)
        between = spec.between * (spec.steps - 1)  # epochs already spent between the steps: out of the budget
        row.update(steps=spec.steps, finetune_epochs_between=between)
        row.update(self.recover(pruned, a.finetune_epochs - between))
        row["finetune_epochs"] = a.finetune_epochs  # in all, between the steps and after the cut
        if row["acc_finetuned"] is not None:
            print(f"{'':>45}  {a.finetune_epochs} epochs: {row['acc_by_epoch']} ({row['finetune_seconds']:.0f} s)",
                  flush=True)
        path = save_checkpoint(pruned, self.build / "models" / f"{slug(spec.key)}.safetensors")
        again = load_model(str(path)).state_dict()
        kept = pruned.state_dict()
        row.update(checkpoint=str(path), checkpoint_verified=again.keys() == kept.keys() and all(
            torch.equal(again[k].cpu(), kept[k].cpu()) for k in kept), recipe=copy.deepcopy(pruned.neurotomy_meta.recipe))
        pair = replace(spec, reconstruct=not spec.reconstruct).key
        other = next((r for r in self.results["records"] if r["key"] == pair), None)
        row["widths_match_pair"] = None if other is None else other["widths"] == row["widths"]
        if other is not None:
            other["widths_match_pair"] = row["widths_match_pair"]
        row.update(speedup_batch64=None, speedup_batch64_min=None, threads=a.threads, load_average=None,
                   provenance={"accuracy": end_stamp(stamp), **({"cut": cut_stamp} if cut_stamp else {})})
        return row

    def cut(self, spec: Spec) -> tuple[nn.Module, dict] | None:
        """The record's cut (ours or a baseline); None when it cannot be made now (said why)."""
        if spec.method != "ours":
            return self.cut_tp(spec)
        if spec.kind == "speedup":  # the prune times candidate cuts: not on a busy machine
            try:
                require_quiet_machine(self.args.wait_quiet, self.args.allow_busy)
            except BusyMachineError as exc:  # the other records need no quiet machine: go on with them
                print(f"{spec.key:>45}: skipped — {exc}", flush=True)
                return None
            try:
                return self.cut_ours(spec)
            except PruningError as exc:  # out of reach as this machine measures now: said, the others go on
                print(f"{spec.key:>45}: skipped — {exc}", flush=True)
                return None
        return self.cut_ours(spec)

    # ------------------------------------------------------------------ the cut stage
    def cut_path(self, spec: Spec) -> Path:
        return self.build / "cuts" / f"{slug(spec.key)}.safetensors"

    def cut_settings(self) -> dict:
        """What a cut depends on: the run's settings but the fine-tune."""
        return {k: v for k, v in self.results.get("settings", {}).items() if k != "finetune"}

    def cut_stage(self) -> bool:
        """Cut each selected record of ours that has no record yet and keep it (model and fields in
        BUILD/cuts) for the accuracy stage, which then fine-tunes it instead of cutting again: on a shared
        machine the speed-up cuts, which time candidates, are made in one quiet window, their fine-tunes
        beside other jobs."""
        done = {r["key"] for r in self.results["records"]}
        made = False
        for spec in self.plan():
            if spec.method != "ours" or spec.key in done or not selected(spec.key, self.args.only) \
                    or self.kept_cut_entry(spec) is not None:
                continue
            stamp = begin_stamp()
            seed_everything(self.args.seed)
            start = time.perf_counter()
            cut = self.cut(spec)
            if cut is None:
                continue
            pruned, fields = cut
            path = save_checkpoint(pruned, self.cut_path(spec))
            write_json(path.with_suffix(".json"), {"key": spec.key, "settings": self.cut_settings(),
                                                   "fields": {**fields, "prune_seconds": time.perf_counter() - start},
                                                   "provenance": end_stamp(stamp)})
            print(f"{spec.key:>45}: cut kept in {path}", flush=True)
            made = True
        return made

    def kept_cut_entry(self, spec: Spec) -> dict | None:
        """The cut stage's JSON entry for this record (key, settings, fields, stamp), if it kept a cut made
        with these settings; the model is not read."""
        path = self.cut_path(spec)
        if not (path.is_file() and path.with_suffix(".json").is_file()):
            return None
        entry = json.loads(path.with_suffix(".json").read_text())
        return entry if entry.get("settings") == self.cut_settings() and entry.get("key") == spec.key else None

    def kept_cut(self, spec: Spec) -> tuple[nn.Module, dict, dict] | None:
        """The cut stage's model, fields and stamp for this record, if it made one with these settings."""
        entry = self.kept_cut_entry(spec)
        if entry is None:
            return None
        return load_model(str(self.cut_path(spec))).eval(), entry["fields"], entry["provenance"]

    def cut_ours(self, spec: Spec) -> tuple[nn.Module, dict]:
        amount = ({"target_macs": spec.target, "scope": spec.scope} if spec.kind == "macs"
                  else {"target_speedup": spec.target})
        job = self.job(spec.criterion, reconstruct=spec.reconstruct, steps=spec.steps, finetune_between=spec.between,
                       finetune_lr=self.args.finetune_lr, **amount)
        pruned, rec = job.run(self.model, self.train, self.test, scores=self.scores(spec.criterion),
                              original_metrics=self.original_metrics)
        latency = {k: rec.get(k) for k in ("latency_ms_predicted", "latency_ms_measured", "latency_ms_original",
                                           "speedup_measured", "load_average")} if spec.kind == "speedup" else None
        if latency is not None:  # how much the cached latency table was rescaled to the machine's speed now
            latency["table_drift"] = rec.get("latency_table", {}).get("drift")
        return pruned, {"acc_pruned": rec["acc_pruned"], "acc_recalibrated": rec["acc_recalibrated"],
                        "acc_reconstructed": rec.get("acc_reconstructed"), "reconstruction": rec.get("reconstruction"),
                        "ratio": rec["ratio"], "score_seconds": rec["score_seconds"],
                        "speedup_batch64_predicted": rec.get("speedup_predicted"), "latency_while_pruning": latency,
                        "latency_attempts": len(rec.get("latency_attempts", [])) or None}

    def cut_tp(self, spec: Spec) -> tuple[nn.Module, dict] | None:
        a = self.args
        matched = None
        if spec.kind == "speedup":
            matched = Spec("ours", a.match_criterion, "latency", "speedup", spec.target).key
            ours = next((r for r in self.results["records"] if r["key"] == matched), None)
            if ours is None:
                print(f"{spec.key:>45}: skipped — it is cut to the MACs {matched} reached; run that record first",
                      flush=True)
                return None
            target = ours["macs_reduction"]
        else:
            target = spec.target
        _, _, importance, global_pruning = TP[spec.method]
        if spec.method == "tp-taylor" and self.grads is None:
            self.grads = taylor_gradients(self.model, self.train, a.tp_taylor_images, seed=a.seed)
        pruned, info = tp_bisect(self.model, target, self.shape, importance, global_pruning,
                                 self.grads if spec.method == "tp-taylor" else None)
        acc_pruned = self.ev(pruned)
        recalibrate_batchnorm(pruned, self.train, a.recalibrate_images, seed=a.seed, quiet=a.quiet)
        fields = {"acc_pruned": acc_pruned, "acc_recalibrated": self.ev(pruned), "acc_reconstructed": None,
                  "reconstruction": None, "ratio": info["ratio"], "score_seconds": None,
                  "speedup_batch64_predicted": None, "tp_bisection": info["bisection"],
                  "tp_rebuilt_identical": info["rebuilt_identical"], "matched_to": matched,
                  "matched_macs_reduction": target if matched else None}
        return pruned, fields

    def recover(self, pruned: nn.Module, epochs: int | None = None) -> dict:
        """The one fine-tune recipe, in place, for ``epochs`` (default ``--finetune-epochs``); test accuracy
        after every epoch."""
        a = self.args
        epochs = a.finetune_epochs if epochs is None else epochs
        if not epochs:
            return {"acc_by_epoch": {}, "acc_finetuned": None, "finetune_epochs": 0, "finetune_seconds": 0.0}
        accuracy: dict[str, float] = {}

        def after_epoch(model: nn.Module, epoch: int) -> None:
            accuracy[str(epoch + 1)] = self.ev(model)
            model.train()

        teacher = copy.deepcopy(self.model).eval() if a.distill else None
        start = time.perf_counter()
        history = finetune(pruned, self.train, epochs, lr=a.finetune_lr, batch_size=a.finetune_batch, seed=a.seed,
                           teacher=teacher, quiet=a.quiet, on_epoch_end=after_epoch,
                           distill_temperature=a.distill_temperature, distill_alpha=a.distill_alpha)
        pruned.eval()
        return {"acc_by_epoch": accuracy, "acc_finetuned": accuracy[str(epochs)],
                "finetune_epochs": epochs, "finetune_seconds": time.perf_counter() - start,
                "train_history": history}

    # ------------------------------------------------------------------ the timing stage
    def timing_stage(self) -> bool:
        a = self.args
        rows = [r for r in self.results["records"] if selected(r["key"], a.only) and timable(r)
                and (a.retime or r.get("speedup_batch64") is None)]
        original = copy.deepcopy(self.model).cpu().eval()
        for row in rows:
            require_quiet_machine(a.wait_quiet, a.allow_busy)
            stamp = begin_stamp()
            pruned, row["timed_from"] = self.timed_model(row)
            t0, t1 = interleaved_latency([original, pruned], self.shape, LATENCY_BATCH, rounds=a.rounds,
                                         repeats=a.repeats, threads=a.threads)
            runs = timing_runs_of(row)
            took = end_stamp(stamp)
            runs.append({"speedup_batch64": t0["median_ms"] / t1["median_ms"],
                         "speedup_batch64_min": t0["min_ms"] / t1["min_ms"], "original_median_ms": t0["median_ms"],
                         "pruned_median_ms": t1["median_ms"], "threads": t0["threads"],
                         "load_average": [t0["load_average"][0], t1["load_average"][-1]],
                         "machine_busy": t0["machine_busy"] or t1["machine_busy"], "date": took["date"],
                         "git_commit": took["git_commit"]})
            speedup = statistics.median(r["speedup_batch64"] for r in runs)
            row.update(timing_runs=runs, speedup_batch64=speedup,
                       speedup_batch64_min=statistics.median(r["speedup_batch64_min"] for r in runs
                                                             if r.get("speedup_batch64_min") is not None),
                       latency_batch64_ms={"original": t0, "pruned": t1}, threads=t0["threads"],
                       load_average=runs[-1]["load_average"], machine_busy=runs[-1]["machine_busy"],
                       speedup_over_macs_ratio=speedup / row["macs_ratio"],
                       speedup_miss=None if row.get("target_speedup") is None else speedup / row["target_speedup"] - 1)
            row["provenance"]["timing"] = took
            print(f"{row['key']:>45}: {t1['median_ms']:.2f} ms vs {t0['median_ms']:.2f} ms → "
                  f"{runs[-1]['speedup_batch64']:.2f}× this run, median of {len(runs)} run(s) {speedup:.2f}× "
                  f"(MACs {row['macs_ratio']:.2f}×; {t0['threads']} thread(s), load {row['load_average']})", flush=True)
            self.save(self.results)
        return self.retime_reconstructions() or bool(rows)

    def timed_model(self, row: dict) -> tuple[nn.Module, str]:
        """The record's saved model, or — where its checkpoint is not on this machine (a run resumed on
        another one) — the original cut by the record's surgery recipe: the same layers at the same widths,
        with the original's weights, which a dense CPU forward's latency does not depend on."""
        if Path(row["checkpoint"]).exists():
            return load_model(row["checkpoint"]).eval(), "checkpoint"
        rebuilt = replay_recipe(copy.deepcopy(self.model).cpu().eval(), row["recipe"], self.shape)
        if conv_widths(rebuilt) != row["widths"]:
            raise NeurotomyError(f"{row['key']}: its recipe rebuilds conv widths {conv_widths(rebuilt)}, the record "
                                 f"has {row['widths']}; not timing a model other than the one measured")
        return rebuilt.eval(), "recipe"

    def retime_reconstructions(self) -> bool:
        """Redo each MACs-targeted reconstruct record's cut and refit on a quiet machine at ``--threads``:
        the accuracy stage's ``reconstruction.seconds`` were taken beside other jobs, and the ≤ 30 s
        target is about the method, not the load. The same seed must give the same refitted accuracy —
        checked, so the re-timed run is the recorded one."""
        a = self.args
        rows = [r for r in self.results["records"] if r["method"] == "ours" and r["reconstruct"]
                and r.get("target_speedup") is None and selected(r["key"], a.only)
                and (a.retime or "seconds_quiet" not in r["reconstruction"])]
        for row in rows:
            require_quiet_machine(a.wait_quiet, a.allow_busy)
            stamp = begin_stamp()
            seed_everything(a.seed)
            spec = Spec("ours", row["criterion"], row["scope"], "macs", row["target_macs_reduction"], True)
            with torch_threads(a.threads) as threads:
                _, fields = self.cut_ours(spec)
            if fields["acc_reconstructed"] != row["acc_reconstructed"]:
                raise NeurotomyError(f"{row['key']}: the re-run refit reached {fields['acc_reconstructed']} where the "
                                     f"record has {row['acc_reconstructed']}; the run is not reproducible — not timing it")
            took = end_stamp(stamp)
            row["reconstruction"].update(seconds_quiet=fields["reconstruction"]["seconds"], threads_quiet=threads,
                                         load_average_quiet=[took["load_average_start"][0], took["load_average_end"][0]])
            row["provenance"]["reconstruction_timing"] = took
            print(f"{row['key']:>45}: reconstruction {fields['reconstruction']['seconds']:.1f} s quiet "
                  f"({threads} thread(s), load {row['reconstruction']['load_average_quiet']}; "
                  f"{row['reconstruction']['seconds']:.1f} s in the accuracy stage)", flush=True)
            self.save(self.results)
        return bool(rows)


# --------------------------------------------------------------------------- plot

def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    records = results["records"]
    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    series: dict = {}  # one line per method, criterion, scope, reconstruct and kind of target
    for r in records:
        kind = "macs" if r.get("target_speedup") is None else "speedup"
        series.setdefault((r["method"], r["criterion"], r["scope"], r["reconstruct"], kind), []).append(r)
    palette = iter(plt.get_cmap("tab10").colors * 3)
    colours = {}
    for method, criterion, scope, _, _ in sorted(series):
        if (method, criterion, scope) not in colours:
            colours[method, criterion, scope] = {"tp-default": "black", "tp-taylor": "dimgrey"}.get(method) or next(palette)

    def style(name) -> dict:
        method, criterion, scope, refit, kind = name
        speed = kind == "speedup"
        return dict(color=colours[method, criterion, scope], ls=":" if speed and method in TP else "--" if refit else "-",
                    lw=2.5 if method in TP else 1.3, marker="*" if speed else "s" if method in TP else "o",
                    ms=8 if speed else 4, label=f"{method} {criterion} {scope}{' +reconstruct' if refit else ''}"
                                                 f"{' (at speed-up targets)' if speed and method in TP else ''}")

    original = 100 * results["acc_original"]
    epochs = results["settings"]["finetune"]["epochs"]
    for ax, field, title in ((axes[0][0], "acc_finetuned", f"after {epochs} fine-tune epochs (same recipe for all)"),
                             (axes[0][1], None, "no fine-tune: recalibrated (solid) / reconstructed (dashed)")):
        for name, rows in sorted(series.items()):
            rows = sorted(rows, key=lambda r: r["macs_reduction"])
            pts = [(100 * r["macs_reduction"], 100 * r[field or ("acc_reconstructed" if r["reconstruct"]
                                                               else "acc_recalibrated")]) for r in rows]
            pts = [p for p in pts if p[1] is not None]
            if pts:
                ax.plot(*zip(*pts), **style(name))
        ax.axhline(original, color="grey", ls=":", label=f"unpruned {original:.2f} %")
        ax.set_xlabel("MACs reduction (%; ★ pruned to a speed-up target)")
        ax.set_ylabel(f"test accuracy (%, {results['test_images']} images)")
        ax.set_title(title, fontsize=9)
    axes[0][0].axhline(original - LOSS_AT_85_PTS, color="grey", ls="-.", lw=0.8, label=f"unpruned − {LOSS_AT_85_PTS} pt")
    tuned = [100 * r["acc_finetuned"] for r in records if r.get("acc_finetuned") is not None]
    if tuned:
        axes[0][0].set_ylim(max(0, min(tuned) - 1), max(tuned + [original]) + 0.5)
    axes[0][0].legend(fontsize=6, loc="lower left", ncol=2)
    axes[0][1].set_ylim(0, 100)

    ax = axes[1][0]
    timed = [r for r in records if r.get("speedup_batch64") is not None and r.get("acc_finetuned") is not None]
    # relative latency (1 / speed-up): each record is timed interleaved with the unpruned model, so a drift in
    # load between records cancels; absolute milliseconds are in latency_batch64_ms
    for name, rows in sorted(series.items()):
        pts = sorted((1 / r["speedup_batch64"], 100 * r["acc_finetuned"]) for r in rows if r in timed)
        if pts:
            ax.plot(*zip(*pts), **{**style(name), "label": None})
    for s in sorted({r["target_speedup"] for r in records if r.get("target_speedup")}):
        ax.axvline(1 / s, color="lightgrey", lw=0.8)
        ax.text(1 / s, 0.01, f" {s:g}× asked", fontsize=7, color="grey", va="bottom", transform=ax.get_xaxis_transform())
    ax.set_xlabel(f"latency / unpruned latency (1 / speedup_batch64: batch {LATENCY_BATCH}, "
                  f"{results['settings']['latency']['threads']} thread(s), medians; ★ speed-up targeted)", fontsize=8)
    ax.set_ylabel(f"test accuracy after {epochs} epochs (%)")
    ax.set_title("accuracy vs measured latency (timing stage)" if timed else "not timed yet (timing stage)", fontsize=9)

    ax = axes[1][1]
    layers = results["conv_layers"]
    ax.plot(range(len(layers)), results["widths_original"], color="lightgrey", lw=4, label="unpruned")
    deep = [r for r in records if r.get("target_macs_reduction") == 0.85 and r.get("target_speedup") is None]
    shown = [r for r in deep if r["method"] in TP and not r["reconstruct"]]
    ours = [r for r in deep if r["method"] == "ours" and not r["reconstruct"]]
    shown += [r for r in ours if r["criterion"] == "l1"][:1]
    top = best(ours)
    if top is not None and top not in shown:
        shown.append(top)
    for r in shown:
        name = (r["method"], r["criterion"], r["scope"], r["reconstruct"], "macs")
        ax.plot(range(len(layers)), r["widths"], **{**style(name), "ls": "-", "label": f"{style(name)['label']} "
                f"({100 * r['acc_finetuned']:.2f} %)" if r.get("acc_finetuned") is not None else style(name)["label"]})
    ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=6)
    ax.set_yscale("log", base=2)
    ax.set_ylabel("output channels")
    ax.set_title("widths per conv layer at −85 % MACs: ours vs torch-pruning", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"{results['model']} — pruning to a budget, ours vs torch-pruning — {results['machine']}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "fashion-mnist"),
                        help="Fashion-MNIST IDX directory (default: ../shared/data/fashion-mnist beside the repo)")
    parser.add_argument("--model", default="zoo:resnet20-fmnist")
    parser.add_argument("--stages", nargs="+", default=["accuracy", "timing"], choices=STAGES)
    parser.add_argument("--criteria", nargs="*", default=None,
                        help="our criteria (default auto: l1, random and the --top best by recalibrated accuracy)")
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument("--rank-among", nargs="+", default=None, help="criteria ranked for auto (default: all)")
    parser.add_argument("--macs-targets", nargs="*", type=float, default=list(MACS_TARGETS))
    parser.add_argument("--speedup-targets", nargs="*", type=float, default=list(SPEEDUP_TARGETS))
    parser.add_argument("--scopes", nargs="+", default=["uniform"], choices=("uniform", "global"))
    parser.add_argument("--baselines", nargs="*", default=list(TP), choices=list(TP))
    parser.add_argument("--reconstruct", default="both", choices=("both", "on", "off"),
                        help="our records without and with reconstruction (both), or one of them")
    parser.add_argument("--match-criterion", default="l1",
                        help="the baselines at a speed-up target are cut to the MACs of ours with this criterion")
    parser.add_argument("--only", nargs="*", default=[], help="keys to run: shell patterns (*) or substrings")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=0.005)
    parser.add_argument("--finetune-batch", type=int, default=64, help="fine-tune batch size (more steps per epoch "
                        "when smaller)")
    parser.add_argument("--steps", type=int, default=1, help="our cuts in this many iterative steps (re-scored and "
                        "BN-recalibrated between them; MACs targets only)")
    parser.add_argument("--finetune-between", type=int, default=0, help="fine-tune epochs after each iterative step "
                        "but the last, taken out of --finetune-epochs (the total stays the same for every record)")
    parser.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                        help="fine-tune with distillation from the unpruned model (default on)")
    parser.add_argument("--distill-temperature", type=float, default=2.0, help="softmax temperature of --distill")
    parser.add_argument("--distill-alpha", type=float, default=0.9, help="weight of the soft loss in --distill")
    parser.add_argument("--recalibrate-images", type=int, default=4096)
    parser.add_argument("--reconstruct-images", type=int, default=2048)
    parser.add_argument("--tp-taylor-images", type=int, default=640)
    parser.add_argument("--max-train", type=int, default=None, help="class-balanced training subset (trial runs)")
    parser.add_argument("--max-test", type=int, default=None, help="class-balanced test subset (trial runs)")
    parser.add_argument("--threads", type=int, default=1, help="threads of the latency table and the timing (default 1)")
    parser.add_argument("--train-threads", type=int, default=None, help="torch threads for cutting and fine-tuning")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wait-quiet", type=float, default=600, help="seconds to wait for a quiet machine")
    parser.add_argument("--allow-busy", action="store_true", help="time a busy machine anyway (load recorded)")
    parser.add_argument("--retime", action="store_true", help="time records again though they are timed")
    parser.add_argument("--device", default="cpu", help="device for cutting and fine-tuning (timing is always CPU)")
    parser.add_argument("--build", default=None, help="pruned models and the latency cache (default "
                        "build/pruning_budget for the published run, OUT/build for any other --out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--smoke", action="store_true", help=f"tiny settings for a trial ({SMOKE}), in a temporary "
                        "directory unless --out; refuses benchmarks/results")
    parser.add_argument("--out", default=None, help="directory for pruning_budget.json and .png (default "
                        "benchmarks/results)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="only add the records (and ranking entries) of these results files, written by other "
                             "processes with the same settings (e.g. two 1-thread lanes split by --only), to --out's "
                             "file, then summarise and plot again")
    args = parser.parse_args(argv)
    if args.smoke:
        if args.out is not None and Path(args.out).resolve() == RESULTS.resolve():
            parser.error("--smoke writes trial numbers: give --out elsewhere (or none: a temporary directory)")
        args.out = args.out or tempfile.mkdtemp(prefix="pruning-budget-smoke-")
        for name, value in SMOKE.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    args.out = args.out or str(RESULTS)
    published = Path(args.out).resolve() == RESULTS.resolve()
    args.build = args.build or str(REPO / "build" / NAME if published else Path(args.out) / "build")
    if args.criteria in ([], ["auto"]):
        args.criteria = None
    args.rank_among = args.rank_among or CRITERIA.names(axis="unit")
    args.reconstruct_modes = {"both": [False, True], "on": [True], "off": [False]}[args.reconstruct]
    for name in list(args.criteria or []) + list(args.rank_among) + [args.match_criterion]:
        if name not in CRITERIA.names(axis="unit"):
            parser.error(f"unknown criterion {name!r}; use one of {', '.join(CRITERIA.names(axis='unit'))}")
    for name in ("top", "recalibrate_images", "reconstruct_images", "tp_taylor_images", "threads", "rounds", "repeats",
                 "finetune_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.finetune_epochs < 0 or args.finetune_lr <= 0:
        parser.error("--finetune-epochs must be ≥ 0 and --finetune-lr > 0")
    if args.steps < 1 or args.finetune_between < 0:
        parser.error("--steps must be at least 1 and --finetune-between ≥ 0")
    if args.steps > 1 and args.speedup_targets:
        parser.error("an iterative cut reaches a MACs target: give --speedup-targets with no value along with --steps")
    if args.steps > 1 and args.finetune_between * (args.steps - 1) >= args.finetune_epochs:
        parser.error(f"--finetune-between {args.finetune_between} × {args.steps - 1} step(s) leaves none of "
                     f"--finetune-epochs {args.finetune_epochs} for after the last step: the epochs between the steps "
                     "are part of that budget")
    if any(not 0 < t < 1 for t in args.macs_targets):
        parser.error("--macs-targets are MACs reductions between 0 and 1, e.g. 0.5 0.7 0.85")
    if any(s <= 1 for s in args.speedup_targets):
        parser.error("--speedup-targets are speed-ups above 1, e.g. 1.5 2 3")
    if not Path(args.root).is_dir():
        parser.error(f"no Fashion-MNIST at {args.root}; pass --root DIR")
    return args


def settings_of(args, train, test) -> dict:
    """What the records' values depend on: a results file measured with other settings is not extended."""
    return {"model": args.model, "train_images": len(train), "test_images": len(test), "seed": args.seed,
            "recalibrate_images": args.recalibrate_images, "reconstruct_images": args.reconstruct_images,
            "tp_taylor_images": args.tp_taylor_images,
            "latency": {"batch": LATENCY_BATCH, "threads": args.threads, "runtime": "torch"},
            "finetune": {"epochs": args.finetune_epochs, "lr": args.finetune_lr, "distill": args.distill,
                         "optimizer": "SGD, Nesterov momentum 0.9, weight decay 5e-4", "batch": args.finetune_batch,
                         "schedule": "cosine, one run, test accuracy after every epoch",
                         "teacher": (f"the unpruned model (KL at T {args.distill_temperature:g}, "
                                     f"weight {args.distill_alpha:g})") if args.distill else None,
                         "same_for_all": True}}


def merge(args) -> None:
    """Join results files that other processes wrote with the same settings into ``--out``'s file: a
    record is added when no record of its key is there, a ranking entry when its criterion is missing.
    Example: two lanes, ``--only '*/macs0.85/*' --out /tmp/a`` and ``--only '*/macs0.5/*' --out /tmp/b``,
    then ``--out benchmarks/results --merge /tmp/a/pruning_budget.json /tmp/b/pruning_budget.json``."""
    out = Path(args.out)
    json_path = out / f"{NAME}.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    for path in map(Path, args.merge):
        if not path.is_file():
            raise NeurotomyError(f"no results file at {path}; pass the pruning_budget.json a run wrote")
        part = json.loads(path.read_text())
        add_recipes(part)  # the lane's checkpoints stay on its machine; the recipes travel with the records
        if results.get("records") and part.get("records") and part.get("settings") != results.get("settings"):
            raise NeurotomyError(f"{path} was measured with other settings than {json_path} "
                                 f"({part.get('settings')} vs {results.get('settings')}); merge only runs of one recipe")
        if not results.get("records"):  # the first part with records brings the run's description
            results = {**part, "records": [], "ranking": results.get("ranking", {}),
                       "provenance": results.get("provenance", {})}
        keys = {r["key"] for r in results["records"]}
        added = [r for r in part.get("records", []) if r["key"] not in keys]
        results["records"] += added
        for section, entries in part.get("ranking", {}).items():
            mine = results.setdefault("ranking", {}).setdefault(section, {})
            mine.update({name: entry for name, entry in entries.items() if name not in mine})
        # a lane seeded with a copy of the out file carries its merge history too: keep only its own stages,
        # else every merge nests the whole history once more (the file grew 2.5 → 5.7 MB in one merge)
        stages = {k: v for k, v in part.get("provenance", {}).items() if k != "merged"}
        results.setdefault("provenance", {}).setdefault("merged", []).append(
            {"file": str(path), "records_added": len(added), "stages": stages})
        print(f"{path}: {len(added)} records added", file=sys.stderr)
    results["summary"] = summarize(results)
    write_json(json_path, results)
    plot(results, out / f"{NAME}.png")
    print(f"wrote {json_path}: {len(results.get('records', []))} records")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    if args.train_threads:
        torch.set_num_threads(args.train_threads)
    out = Path(args.out)
    json_path, png_path = out / f"{NAME}.json", out / f"{NAME}.png"
    model = place(load_model(args.model).eval(), args.device)
    meta = model.neurotomy_meta
    dataset = meta.dataset or "fashion-mnist"
    train = balanced_subset(load_dataset(dataset, root=args.root, split="train"), args.max_train, seed=args.seed)
    test = balanced_subset(load_dataset(dataset, root=args.root, split="test"), args.max_test, seed=args.seed)
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    settings = settings_of(args, train, test)
    if results.get("records") and results.get("settings") != settings:
        flat = lambda d: {f"{k}.{j}" if isinstance(v, dict) else k: w  # noqa: E731
                          for k, v in d.items() for j, w in (v.items() if isinstance(v, dict) else [(None, v)])}
        before, now = flat(results.get("settings") or {}), flat(settings)
        changed = next((k for k in {**before, **now} if before.get(k) != now.get(k)), "settings")
        raise NeurotomyError(f"{json_path} was measured with {changed}={before.get(changed)!r}, this run has "
                             f"{now.get(changed)!r}; give another --out, or that run's settings")
    if "acc_original" not in results or results.get("settings") != settings:
        results["acc_original"] = evaluate(model, test, quiet=True)["accuracy"]
    results.update({
        "question": "pruning to a MACs or latency budget: ours (PruneJob) vs torch-pruning's default and group-Taylor "
                    "pipelines at the same budget, before and after the same fine-tune; reconstruction without "
                    "fine-tuning; measured speed-up vs the asked one; does recalibrated accuracy predict the "
                    "fine-tuned one across criteria",
        "machine": machine(), "model": args.model, "dataset": dataset, "settings": settings, "smoke": args.smoke,
        "test_images": len(test), "conv_layers": [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)],
        "widths_original": conv_widths(model),
        "definitions": {"macs_reduction": "1 − pruned MACs / original MACs", "macs_ratio": "original MACs / pruned MACs",
                        "speedup_batch64": "original median / pruned median latency, batch 64, CPU, --threads, "
                                           "interleaved rounds (timing stage)",
                        "speedup_batch64_predicted": "the latency table's prediction (speed-up targets only)",
                        "acc_finetuned": "test accuracy after the last fine-tune epoch (acc_by_epoch: after each)"},
        "methods": {"ours": "neurotomy.jobs.prune.PruneJob (scores once per criterion; recalibration; reconstruct)",
                    "tp-default": "torch-pruning MetaPruner + MagnitudeImportance(p=1), uniform, ratio bisected to the "
                                  f"MACs target (±{TP_TOLERANCE})",
                    "tp-taylor": "torch-pruning MetaPruner + GroupTaylorImportance, global, gradients on "
                                 f"{args.tp_taylor_images} training images, ratio bisected to the MACs target"}})
    results.setdefault("records", [])
    results.setdefault("provenance", {})
    add_recipes(results)

    def save(current: dict) -> None:
        current["summary"] = summarize(current)
        write_json(json_path, current)
        plot(current, png_path)

    print(f"{args.model}: test accuracy {results['acc_original']:.4f} on {len(test)} images, {len(train)} training "
          f"images; {machine()}; writing {json_path}", flush=True)
    bench = Budget(args, model, train, test, results, save)
    for stage in STAGES:
        if stage in args.stages:
            stamp = begin_stamp()
            if {"cut": bench.cut_stage, "accuracy": bench.accuracy_stage, "timing": bench.timing_stage}[stage]():
                results["provenance"][stage] = end_stamp(stamp)
    save(results)
    for line in results["summary"]["misses"]:
        print(f"missed: {line}")
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    try:
        main()
    except NeurotomyError as exc:  # bad input or a refused run: one line, no traceback
        print(f"pruning_budget.py: {exc}", file=sys.stderr)
        sys.exit(2)
