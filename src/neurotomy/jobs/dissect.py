"""``neurotomy dissect``: the main job, from a trained model to a readable verdict.

layer table → unit scores (several criteria and their rank agreement) → pruning to a MACs target
with recalibration and a short fine-tune → deployment (original → pruned → pruned + int8 in
onnxruntime; optional: on when onnxruntime is installed and the budget times latency) → layer
dynamics (modularity curves, CKA original vs pruned) → for a transformer, its heads, MLP neurons
and token views → directions and concepts of the last block (PRCA/PCA, DRSA, CRP reference images
of kept and pruned-away channels) → class subsets → explanations of both models side by side →
``report.json`` (every number, every figure) and ``report.html`` rendered from it, plus the pruned
checkpoint.

Each stage is a call into the library (the measuring ones are in :mod:`neurotomy.jobs.dissect_stages`)
returning a plain record; each section of the report is one function (:mod:`neurotomy.report.sections`,
``class_subsets_section``, ``explanations_section``) that renders such a record into a section
record; the HTML renders whatever list of sections it is given.

Given a :class:`~neurotomy.run_state.RunState`, every finished stage's record is saved in it (the
fine-tune epoch by epoch), and an interrupted dissection resumes: finished stages are loaded, not
rerun, and the prune is redone from the saved scores with its fine-tune fast-forwarded to the saved
weights, so the report is the one an uninterrupted run writes (timings aside).

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> report = dissect(load_model("zoo:lenet5-digits"), load_dataset("digits"),
    ...                  load_dataset("digits", split="test"), budget="tiny", quiet=True)
    >>> [s["id"] for s in report["sections"]]  # the tiny budget times nothing: no deployment section
    ['layers', 'scores', 'pruning', 'dynamics', 'directions', 'class_subsets', 'explanations', 'run']
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.checkpoint import save_checkpoint
from neurotomy.data.subsets import balanced_subset
from neurotomy.device import model_device, place
from neurotomy.errors import NeurotomyError, PruningError
from neurotomy.jobs.budget import DissectBudget, finetune_epochs_for, parse_budget
from neurotomy.jobs.dissect_stages import (TRANSFORMER_CRITERION, TRANSFORMER_REPORT_CRITERIA, TRANSFORMER_UNITS,
                                           concept_records, deployment_available, deployment_records,
                                           dynamics_records, layer_records, reason_methods, reason_records,
                                           score_records, subset_records, transformer_records,
                                           transformer_score_records, transformer_scores)
from neurotomy.jobs.prune import PruneJob, forward_seconds, scores_from_record, scores_record
from neurotomy.measure import compare_models
from neurotomy.models.anatomy import model_input_shape
from neurotomy.models.transformer import is_transformer
from neurotomy.provenance import begin_stamp, end_stamp
from neurotomy.report import sections
from neurotomy.report.class_subsets_section import class_subsets_section
from neurotomy.report.concepts_section import directions_section
from neurotomy.report.deployment_section import deployment_section
from neurotomy.report.explanations_section import explanations_section
from neurotomy.report.transformer_section import transformer_section
from neurotomy.report.html import write_report
from neurotomy.report.verdict import verdict
from neurotomy.scores import get_criterion
from neurotomy.scores.transformer import transformer_criteria
from neurotomy.surgery.planner import SCOPES
from neurotomy.train import evaluate, seed_everything
from neurotomy.run_state import RunState, weights_digest


class _Stages:
    """Prints one line per stage (unless quiet) and records how long each took."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.done = total, quiet, 0
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.done += 1
        if not self.quiet:
            print(f"dissect [{self.done}/{self.total}] {name}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def machine(model: nn.Module | None = None) -> dict:
    """What the run computed and the timings were measured on: ``device`` is where ``model``
    computed (training, scores, explanations), ``latency_device`` where latency was timed (always
    the CPU, see :func:`neurotomy.measure.interleaved_latency`)."""
    from neurotomy.provenance import device_name

    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": torch.cuda.is_available(),
            "device": device_name(model_device(model) if model is not None else "cpu"), "latency_device": "cpu"}


def _epoch_seconds(model: nn.Module, train: Dataset) -> float:
    """Estimated seconds of one fine-tune epoch: a timed forward pass over up to 512 images,
    scaled to the training set, ×3 for the backward pass and the update."""
    images = min(512, len(train))
    return 3 * forward_seconds(model, train, images) * len(train) / images


def _resumable(state: RunState | None, stages: _Stages, label: str, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` as the stage ``label``; with ``state``, saved there as ``key`` and, when the state
    already holds it, loaded instead (with the seconds it took)."""
    if state is not None and state.has_stage(key):
        with stages(label):
            saved = state.load_stage(key)
        stages.seconds[label] = saved["seconds"]
        return saved["result"]
    with stages(label):
        result = compute()
    if state is not None:
        state.save_stage(key, {"result": result, "seconds": stages.seconds[label]})
    return result


def _check_transformer_criterion(criterion: str) -> None:
    """A transformer is pruned by heads and MLP neurons: the criterion must score both."""
    both = [c for c in transformer_criteria("head") if c in transformer_criteria("neuron")]
    if criterion not in both:
        raise PruningError(f"criterion {criterion!r} does not score a transformer's heads and MLP neurons; use one "
                           f"of {', '.join(both)} (see `neurotomy criteria`)")


def _score_stage(model: nn.Module, train: Dataset, criteria: list[str], transformer: bool, budget: DissectBudget,
                 seed: int, quiet: bool) -> dict:
    """Every criterion's scores as saveable records (a transformer's: per unit kind)."""
    if transformer:
        return {name: {unit: scores_record(s) for unit, s in units.items()} for name, units in transformer_scores(
            model, train, criteria, budget.score_images, seed=seed, quiet=quiet).items()}
    return {name: scores_record(get_criterion(name)(model, train, seed=seed, quiet=quiet,
                                                    max_images=budget.score_images)) for name in criteria}


def _deploy_flag(deploy: bool | None, budget: DissectBudget) -> bool:
    """``deploy`` as given, or (``None``) whether onnxruntime is installed and the budget times latency
    (the deployment's point is its speed-up: the ``tiny`` smoke budget times nothing); ``True``
    without onnxruntime fails."""
    if deploy is None:
        return deployment_available() and bool(budget.latency_batches)
    if deploy and not deployment_available():
        raise NeurotomyError("the deployment section needs onnx and onnxruntime: pip install 'neurotomy[onnx]', "
                             "or dissect without it (--no-deploy, deploy=False)")
    return bool(deploy)


def dissect(model: nn.Module, train: Dataset, test: Dataset, out_dir: str | os.PathLike | None = None,
            budget: str | DissectBudget = "fast", target_macs: float = 0.5, criterion: str = "l1",
            scope: str = "uniform", seed: int = 0, quiet: bool = False, model_name: str | None = None,
            force: bool = False, state: RunState | None = None,
            device: str | torch.device | None = None, deploy: bool | None = None) -> dict:
    """Run the whole dissection of ``model`` and return the report; with ``out_dir``, write
    ``report.json``, ``report.html`` and ``pruned.safetensors`` there (atomically). ``force``: keep
    the fine-tuned pruned model even when fine-tuning lowered its accuracy (see
    :class:`~neurotomy.jobs.prune.PruneJob`); ``state``: save each stage, resume from what it holds;
    ``device``: move ``model`` there first (``None``: compute where it is; latency is always CPU latency);
    ``deploy``: add the deployment section (``None``: when onnxruntime is installed and the budget times
    latency — not ``tiny``; ``True`` without onnxruntime fails before any work)."""
    budget = budget if isinstance(budget, DissectBudget) else parse_budget(budget)
    if not 0 < target_macs < 1:
        raise PruningError(f"--target-macs {target_macs}: give the fraction of MACs to remove, between 0 and 1 "
                           f"(e.g. 0.5)")
    get_criterion(criterion)  # unknown name: fail before any work
    transformer = is_transformer(model)
    if transformer:
        _check_transformer_criterion(criterion)
    deploy = _deploy_flag(deploy, budget)
    validate.known_name(scope, "scope", names=SCOPES, kind="scope")
    seed = validate.seed(seed, "seed")
    if out_dir is not None:
        validate.output_dir(out_dir, "out_dir")  # an out_dir under a file fails now, not after the whole job
    criteria = list(dict.fromkeys([criterion, *(TRANSFORMER_REPORT_CRITERIA if transformer else budget.criteria)]))
    if state is not None:
        state.expect({"job": "dissect", "budget": budget.to_dict(), "target_macs": target_macs, "criterion": criterion,
                      "scope": scope, "seed": seed, "model": weights_digest(model), "deploy": deploy,
                      "data": [f"{getattr(d, 'name', '')}:{len(d)}" for d in (train, test)]})
    place(model, device)
    stamp = begin_stamp(device=model_device(model))  # the report says which code, when, and how busy the machine was
    seed_everything(seed)
    model.eval()
    train, test = balanced_subset(train, budget.train_images, seed), balanced_subset(test, budget.test_images, seed)
    shape = model_input_shape(model, train)
    stages = _Stages(8 + deploy + transformer, quiet)

    original_metrics = _resumable(state, stages, "evaluate the original model", "dissect/evaluate",
                                  lambda: evaluate(model, test, quiet=quiet))
    scores = _resumable(state, stages, f"unit scores: {', '.join(criteria)}", "dissect/scores",
                        lambda: _score_stage(model, train, criteria, transformer, budget, seed, quiet))
    if transformer:  # {criterion: {"head": …, "neuron": …}}: a transformer is pruned by heads and MLP neurons
        scores = {name: {unit: scores_from_record(r) for unit, r in units.items()} for name, units in scores.items()}
        prune_scores = [scores[criterion][unit] for unit in TRANSFORMER_UNITS]
    else:
        scores = {name: scores_from_record(saved) for name, saved in scores.items()}
        prune_scores = scores[criterion]
    epochs = budget.finetune_epochs
    if budget.minutes is not None:  # fitted to the time left once, then kept by a resumed run
        if state is not None and state.has_stage("dissect/epochs"):
            epochs = state.load_stage("dissect/epochs")
        else:
            epochs = finetune_epochs_for(budget, stages.elapsed, _epoch_seconds(model, train))
            if state is not None:
                state.save_stage("dissect/epochs", epochs)
    with stages(f"prune −{target_macs:.0%} MACs ({criterion}, {scope}), recalibrate, fine-tune {epochs} epoch(s)"):
        job = PruneJob(criterion=criterion, target_macs=target_macs, scope=scope,
                       recalibrate_images=budget.recalibrate_images, finetune_epochs=epochs,
                       measure_latency=False, seed=seed, quiet=quiet, force=force)
        pruned, record = job.run(model, train, test, scores=prune_scores, original_metrics=original_metrics,
                                 state=state)
        pruned_metrics = {"accuracy": record["comparison"]["pruned"]["accuracy"],
                          "per_class_recall": record["comparison"]["pruned"]["per_class_recall"]}
    batches = ", ".join(map(str, budget.latency_batches)) or "— (not measured)"
    record["comparison"] = _resumable(
        state, stages, f"size and latency at batch {batches}", "dissect/size",
        lambda: compare_models(model, pruned, shape, original_metrics, pruned_metrics,
                               latency_batches=budget.latency_batches))
    report_sections = [sections.layers_section(layer_records(model, pruned, shape)),
                       sections.scores_section(transformer_score_records(scores, criterion) if transformer
                                               else score_records(scores, criterion)),
                       sections.pruning_section(record, original_metrics, {**original_metrics, **pruned_metrics})]
    if deploy:
        deployed = _resumable(state, stages, "deployment: original → pruned → pruned + int8 (onnxruntime)",
                              "dissect/deploy", lambda: deployment_records(model, pruned, train, test, budget, seed,
                                                                           quiet))
        report_sections.append(deployment_section(deployed))
    dynamics = _resumable(state, stages, "layer dynamics: modularity curves, CKA original vs pruned",
                          "dissect/dynamics", lambda: dynamics_records(model, pruned, test, budget, seed, quiet))
    report_sections.append(sections.dynamics_section(dynamics))
    if transformer:
        units = _resumable(state, stages, "transformer: head and MLP-neuron scores, token views, CKA between blocks",
                           "dissect/transformer",
                           lambda: transformer_records(model, pruned, test, budget, scores[TRANSFORMER_CRITERION],
                                                       seed, quiet))
        report_sections.append(transformer_section(units))
    concepts = _resumable(state, stages, "directions and concepts of the last block: PRCA, DRSA, CRP",
                          "dissect/concepts",
                          lambda: concept_records(model, train, test, budget, None if transformer else
                                                  scores[criterion], seed, quiet))
    report_sections.append(directions_section(concepts))
    subsets = _resumable(state, stages, "class feature subsets of the final layer, original and pruned",
                         "dissect/subsets",
                         lambda: subset_records(model, pruned, train, test, images=budget.subset_images, quiet=quiet))
    report_sections.append(class_subsets_section(subsets))
    with stages(f"explanations of {budget.explain_images} test images, original vs pruned"):
        reasons, figure = reason_records(model, pruned, balanced_subset(test, budget.explain_images, seed + 1),
                                         methods=reason_methods(model), seed=seed, quiet=quiet)
        report_sections.append(explanations_section(reasons, figure))
    meta = getattr(model, "neurotomy_meta", None)
    report = {
        "tool": "neurotomy dissect",
        "model": model_name or (meta.arch if meta else type(model).__name__),
        "arch": meta.arch if meta else type(model).__name__,
        "dataset": getattr(train, "name", "") or (meta.dataset if meta else ""),
        "train_images": len(train), "test_images": len(test),
        "budget": budget.to_dict(), "finetune_epochs": epochs, "target_macs": target_macs,
        "criterion": criterion, "scope": scope, "seed": seed,
        "machine": machine(model),
        "provenance": end_stamp(stamp),
    }
    report["verdict"] = verdict(record, report_sections)
    report["sections"] = report_sections + [sections.run_section(report, stages.seconds, stages.elapsed)]
    if out_dir is not None:
        out_dir = Path(out_dir)
        report["files"] = {"report_json": "report.json", "report_html": "report.html",
                           "pruned_checkpoint": "pruned.safetensors"}
        save_checkpoint(pruned, pruned.neurotomy_meta, out_dir / "pruned.safetensors")
        write_report(report, out_dir)
    return report


__all__ = ["dissect", "machine"]
