"""The whole prune job, observe → score → cut → recover → measure, as one call.

The CLI's ``prune`` and the pruning benchmark both run this, so the numbers they report are made
the same way.

With ``reconstruct=True`` the cut model is refitted layer by layer to the original's responses
(:func:`neurotomy.reconstruct.reconstruct`, on ``reconstruct_images`` training images);
``acc_reconstructed`` is its accuracy, next to ``acc_recalibrated``, and the recovered model (the
one fine-tuned, if asked) is the reconstructed one.

With ``target_speedup`` or ``target_latency_ms`` a CNN is pruned to a latency measured on this
machine at ``latency_batch`` images and ``threads`` threads in ``latency_runtime`` (``torch``,
``onnx``, ``onnx-int8``; :func:`neurotomy.surgery.filters.prune_to_latency`): the record holds the
predicted and measured speed-up and latency, and ``comparison`` is measured with the same threads.
A transformer is cut to the MACs target whose timed cut meets the goal
(:func:`neurotomy.surgery.transformer_latency.prune_transformer_to_latency`: measured, no table).

A transformer (:func:`neurotomy.models.transformer.is_transformer`) is pruned by its own units:
``units`` names the kinds cut — ``heads``, ``neurons``, ``embedding`` (the residual stream) or
``all``, several with commas; default ``heads,neurons`` — each scored by the transformer version of
``criterion`` (:mod:`neurotomy.scores.transformer`) and cut by
:func:`neurotomy.surgery.transformer.prune_transformer`. LayerNorm keeps no running statistics, so
there is nothing to recalibrate (``acc_recalibrated`` equals ``acc_pruned`` and ``recalibration`` says
why); recovery is reconstruction or fine-tuning (with ``distill``, from the unpruned model).

A fine-tune that leaves the model worse on the test set than it was before fine-tuning (after
recalibration) is not kept: the job returns the model before the fine-tune, says so in one line
(a :class:`~neurotomy.errors.NeurotomyWarning`) and in the record (``kept``, ``note``), unless
``force=True``. With a :class:`~neurotomy.run_state.RunState`, the scores and every fine-tune epoch are
saved as they are made, and an interrupted prune resumes from them.

Example:
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> job = PruneJob(criterion="l1", target_macs=0.3, measure_latency=False, quiet=True)
    >>> pruned, record = job.run(load_model("zoo:lenet5-digits"), load_dataset("digits"),
    ...                          load_dataset("digits", split="test"))
    >>> record["macs_reduction"] > 0.25, record["acc_original"] > 0.9
    (True, True)
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.data.batches import iterate_batches
from neurotomy.device import model_device, place, to_device
from neurotomy import validate
from neurotomy.errors import NeurotomyError, NeurotomyWarning, PruningError
from neurotomy.measure import compare_models
from neurotomy.models.summary import count_macs_params
from neurotomy.recover import finetune, recalibrate_batchnorm
from neurotomy.reconstruct import reconstruct
from neurotomy.scores import get_criterion
from neurotomy.scores.transformer import score_transformer, transformer_criteria
from neurotomy.models.transformer import is_transformer
from neurotomy.models.anatomy import model_input_shape
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.filters import PruningResult, apply_cuts, prune_filters
from neurotomy.surgery.latency_plan import check_latency_request
from neurotomy.jobs import latency_runtimes  # noqa: F401  (registers the onnx and onnx-int8 latency runtimes)
from neurotomy.surgery.planner import SCOPES, Cut, check_reachable, ignored_names
from neurotomy.surgery.recipe import replay_recipe
from neurotomy.dynamics.layer_rules import choose_blocks
from neurotomy.surgery.layers import remove_blocks
from neurotomy.surgery.transformer import prune_transformer
from neurotomy.surgery.transformer_latency import prune_transformer_to_latency
from neurotomy.jobs.schedules import prune_iteratively, soft_filter_pruning
from neurotomy.train import TrainConfig, evaluate
from neurotomy.run_state import RunState, weights_digest


CALIBRATION_IMAGES = 512  # training images that choose a transformer's split between unit families
# ... fewer for a large model: each candidate split is run on them (~10-20 candidates), so their count is capped
# by this many MACs per candidate — 512 images of the zoo ViT (43 MMACs) fit, ViT-B at 32 px (426 MMACs) gets 56
CALIBRATION_MACS = 24e9
MIN_CALIBRATION_IMAGES = 16  # below this the loss says little: the split is chosen without data (stream last)


def calibration_images(macs_per_image: float) -> int:
    """How many training images choose a transformer's split between unit families: 512, fewer for a
    model whose forward costs more, and none (the data-free split) when fewer than 16 would fit — a
    MaxViT-T at 224 px (5.6 GMACs) took 180 s and 3.6 GB over 64 images.

    >>> calibration_images(43e6), calibration_images(426e6), calibration_images(5.6e9)
    (512, 56, 0)
    """
    images = int(min(CALIBRATION_IMAGES, CALIBRATION_MACS // max(macs_per_image, 1)))
    return images if images >= MIN_CALIBRATION_IMAGES else 0


@dataclass
class PruneJob:
    """Settings of one prune; ``run`` does it and returns (pruned model, record)."""

    criterion: str = "l1"
    target_macs: float | None = None  # give exactly one of target_macs, ratio, target_params, layers, target_speedup, target_latency_ms
    ratio: float | None = None
    target_params: float | None = None
    target_speedup: float | None = None  # prune to a measured latency: × faster than the original
    target_latency_ms: float | None = None  # … or milliseconds per batch of latency_batch images
    latency_batch: int = 64
    threads: int | None = None  # threads of the deployment: the latency table's, and the job's latency measurement
    latency_runtime: str = "torch"  # torch | onnx | onnx-int8: the runtime the table is measured in
    latency_cache: str | None = None  # the latency table cache directory (default ~/.cache/neurotomy/latency)
    scope: str = "uniform"
    min_channels: int = 1
    round_to: int | None = None
    inner_only: bool = False
    ignored_layers: list[str] | None = None
    score_images: int | None = None
    recalibrate_images: int = 4096
    reconstruct: bool = False  # refit each layer to the original's responses by least squares (no training)
    reconstruct_images: int = 2048
    finetune_epochs: int = 0
    layers: str | None = None  # remove residual blocks instead: modularity | random | last | a list
    units: str | None = None  # transformers: heads | neurons | embedding | all, comma-separated (default heads,neurons)
    blocks: int | None = None
    layer_threshold: float = 0.25
    steps: int = 1
    finetune_between: int = 0
    sfp_epochs: int = 0
    finetune_lr: float = 0.01
    finetune_batch: int = 128
    distill: bool = False
    distill_temperature: float = 2.0  # with distill: the recipe that lost least at −85 % MACs (5 seeds)
    distill_alpha: float = 0.9
    measure_latency: bool = True
    seed: int = 0
    quiet: bool = False
    max_eval_images: int | None = None
    force: bool = False  # keep the fine-tuned model even when it is worse than before fine-tuning
    device: str | None = None  # "cpu", "cuda", "mps", "auto": move the model there first; None: leave it where it is

    def run(self, model: nn.Module, train_data: Dataset, test_data: Dataset,
            scores: UnitScores | None = None, original_metrics: dict | None = None,
            state: RunState | None = None) -> tuple[nn.Module, dict]:
        """Prune ``model`` (untouched) and return the recovered copy and its record. ``scores`` and
        ``original_metrics`` may be passed in when one model is pruned many ways (benchmarks).
        ``state``: save scores and fine-tune epochs there, resuming from what it holds."""
        self._validate(model)
        place(model, self.device)  # None: prune and recover where the model is
        if state is not None:
            settings = {k: v for k, v in asdict(self).items() if k not in ("quiet", "force", "device")}
            state.expect({**settings, "model": weights_digest(model),
                          "data": f"{getattr(train_data, 'name', '')}:{len(train_data)}"}, part="prune")
        shape = model_input_shape(model, train_data)
        if scores is None:
            self._check_reachable(model, shape)
        ev = lambda m: evaluate(m, test_data, quiet=self.quiet, max_images=self.max_eval_images)  # noqa: E731
        original_metrics = original_metrics or ev(model)
        if scores is None and not (self.sfp_epochs or self.steps > 1 or self.layers):  # those score as they go
            scores = self._scores(model, train_data, state)
        score_seconds = _score_seconds(scores)
        result = self._cut(model, scores, train_data, shape, state)
        if self.ratio is not None and not result.cuts:  # else a prune that removed nothing is written as one
            limits = f"min_channels={self.min_channels}" + (f", round_to={self.round_to}" if self.round_to else "")
            raise PruningError(f"ratio {self.ratio} removes no channel: with {limits} every layer keeps all its "
                               "channels; raise the ratio or lower those limits")
        pruned = result.model
        record = {"criterion": self.criterion if not self.layers else f"layers:{self.layers}",
                  "settings": {**asdict(self), "device": None if self.device is None else str(self.device)}, **result.summary(),
                  "acc_original": original_metrics["accuracy"], "score_seconds": score_seconds,
                  "forward_seconds": forward_seconds(model, train_data, self.score_images or getattr(
                      _conv_criterion(self.criterion), "default_images", 640))}
        if is_transformer(model):  # a layers prune removes whole blocks, not heads or neurons
            record["units"] = ["block"] if self.layers else self._units()
        metrics = ev(pruned)
        record["acc_pruned"] = metrics["accuracy"]
        cut = copy.deepcopy(pruned) if self.reconstruct else None  # refitted from the cut, not the recalibrated model
        if self.recalibrate_images:
            if recalibrate_batchnorm(pruned, train_data, self.recalibrate_images, seed=self.seed, quiet=self.quiet):
                metrics = ev(pruned)
            else:  # no BatchNorm (a ViT's LayerNorms keep no running statistics): the cut model as it is
                record["recalibration"] = "no BatchNorm layer: nothing to recalibrate"
            record["acc_recalibrated"] = metrics["accuracy"]
        if self.reconstruct:
            pruned, metrics = self._reconstruct(model, cut, result, train_data, shape, ev, record)
        if self.finetune_epochs:
            pruned, metrics = self._finetune(model, pruned, metrics, train_data, ev, record, state)
        record["finetune_epochs"] = self.finetune_epochs
        comparison = compare_models(model, pruned, shape, original_metrics, metrics,
                                    latency_batches=(1, 64) if self.measure_latency else (), threads=self.threads)
        record["comparison"] = comparison
        record["speedup_batch64"] = comparison.get("speedup_batch64")
        record["macs_ratio"] = comparison["macs_ratio"]
        meta = getattr(pruned, "neurotomy_meta", None)
        if meta is not None:
            meta.metrics = {"test": {"accuracy": metrics["accuracy"], "n": metrics["n"]},
                            "pruning": {k: v for k, v in record.items() if k not in ("comparison", "channels")}}
        return pruned, record

    def _scores(self, model: nn.Module, train_data: Dataset, state: RunState | None) -> UnitScores | list[UnitScores]:
        """The criterion's scores of ``model`` (a transformer: one per unit kind cut), or the ones an
        interrupted run already computed."""
        if is_transformer(model):
            return [scores_stage(state, f"prune/scores/{unit}", lambda unit=unit: score_transformer(
                model, self.criterion, unit, train_data, max_images=self.score_images, seed=self.seed,
                quiet=self.quiet)) for unit in self._units()]
        return scores_stage(state, "prune/scores", lambda: get_criterion(self.criterion)(
            model, train_data, seed=self.seed, quiet=self.quiet, max_images=self.score_images))

    def _units(self) -> list[str]:
        """The transformer unit kinds this job cuts, as the scores name them (head, neuron, embedding)."""
        kinds = {"heads": "head", "neurons": "neuron", "embedding": "embedding"}
        asked = [u.strip() for u in (self.units or "heads,neurons").split(",") if u.strip()]
        if "all" in asked:
            asked = list(kinds)
        for unit in asked:
            validate.known_name(unit, "units", names=[*kinds, "all"], kind="unit kind")
        return [kinds[u] for u in kinds if u in asked]

    def _reconstruct(self, model: nn.Module, cut: nn.Module, result: PruningResult, train_data: Dataset,
                     shape, ev, record: dict) -> tuple[nn.Module, dict]:
        """Refit ``cut`` (the model right after the cut, BatchNorms as the original's) to ``model``'s
        responses layer by layer. Its BatchNorms are not recalibrated afterwards: each refitted layer
        reproduces the original's pre-BatchNorm response, so the original's statistics (intercept
        folded in) are the ones that match; re-estimating them changed accuracy by 0 to −0.4 pt on
        zoo:resnet20-fmnist (−50 % and −70 % MACs)."""
        kept = kept_output_channels(model, cut, result.cuts, shape)
        done = reconstruct(model, cut, train_data, kept, images=self.reconstruct_images, seed=self.seed,
                           quiet=self.quiet)
        metrics = ev(cut)
        record["acc_reconstructed"] = metrics["accuracy"]
        after = list(done.error_after.values())
        record["reconstruction"] = {"layers": len(done.layers), "images": done.images, "seconds": done.seconds,
                                    "mean_error_before": sum(done.error_before.values()) / max(len(after), 1),
                                    "mean_error_after": sum(after) / max(len(after), 1),
                                    "residual_adds": len(done.partners), "skipped": done.skipped}
        return cut, metrics

    def _finetune(self, model: nn.Module, pruned: nn.Module, before: dict, train_data: Dataset, ev, record: dict,
                  state: RunState | None) -> tuple[nn.Module, dict]:
        """Fine-tune ``pruned``; keep whichever of it and the model before fine-tuning is more accurate
        (the fine-tuned one with ``force``)."""
        teacher = copy.deepcopy(model).eval() if self.distill else None
        untuned = copy.deepcopy(pruned)
        finetune(pruned, train_data, self.finetune_epochs, lr=self.finetune_lr, batch_size=self.finetune_batch,
                 seed=self.seed, teacher=teacher, quiet=self.quiet, state=state, state_key="prune/finetune",
                 distill_temperature=self.distill_temperature, distill_alpha=self.distill_alpha)
        metrics = ev(pruned)
        record["acc_finetuned"] = metrics["accuracy"]
        if metrics["accuracy"] >= before["accuracy"] or self.force:
            record["kept"] = "finetuned"
            return pruned, metrics
        untouched = "recalibrated" if self.recalibrate_images else "pruned"
        record["kept"] = "reconstructed" if self.reconstruct else untouched
        record["note"] = (f"fine-tuning lowered test accuracy {before['accuracy']:.4f} → {metrics['accuracy']:.4f}; "
                          f"kept the model before fine-tuning (--force keeps the fine-tuned one)")
        warnings.warn(record["note"], NeurotomyWarning, stacklevel=2)
        return untuned, before

    def _remove_blocks(self, model: nn.Module, train_data: Dataset, shape) -> PruningResult:
        names, basis = choose_blocks(model, self.layers, train_data, count=self.blocks,
                                     threshold=self.layer_threshold, seed=self.seed, quiet=self.quiet)
        if not names:
            raise PruningError(f"the {self.layers} rule found no redundant block (threshold "
                               f"{self.layer_threshold}); raise --layer-threshold or give --blocks N")
        slim = remove_blocks(model, names, train_data, seed=self.seed)  # plain nets: successors refit
        macs0, params0 = count_macs_params(model, shape)
        macs1, params1 = count_macs_params(slim, shape)
        return PruningResult(slim, [], 0.0, "layers", macs0, macs1, params0, params1,
                             details={"blocks_removed": names, **basis})

    def _validate(self, model: nn.Module) -> None:
        """Fail before any work on a value out of range or settings that cannot go together."""
        amounts = (self.ratio, self.target_macs, self.target_params, self.layers, self.target_speedup,
                   self.target_latency_ms)
        if sum(a is not None for a in amounts) != 1:
            raise PruningError("give exactly one of ratio, target_macs, target_params, layers, target_speedup "
                               "or target_latency_ms")
        for name in ("ratio", "target_macs", "target_params"):
            if getattr(self, name) is not None:
                validate.fraction(getattr(self, name), name, "[0, 1)")
        for name in ("min_channels", "steps", "finetune_batch"):
            validate.positive_int(getattr(self, name), name)
        validate.positive_int(self.reconstruct_images, "reconstruct_images")
        for name in ("recalibrate_images", "finetune_epochs", "finetune_between", "sfp_epochs"):
            validate.non_negative_int(getattr(self, name), name)
        for name in ("round_to", "score_images", "blocks", "max_eval_images"):
            if getattr(self, name) is not None:
                validate.positive_int(getattr(self, name), name)
        validate.positive_float(self.finetune_lr, "finetune_lr")
        validate.positive_float(self.distill_temperature, "distill_temperature")
        validate.fraction(self.distill_alpha, "distill_alpha", "[0, 1]")
        validate.non_negative_float(self.layer_threshold, "layer_threshold")
        validate.known_name(self.scope, "scope", names=SCOPES, kind="scope")
        validate.seed(self.seed, "seed")
        if self.threads is not None:
            validate.positive_int(self.threads, "threads")
        if self._to_latency():  # a transformer's widths are not the latency table's: round_to applies to it
            check_latency_request(None, None, None, self.target_speedup, self.target_latency_ms, self.latency_batch,
                                  self.threads, self.latency_runtime, self.min_channels,
                                  None if is_transformer(model) else self.round_to)
        if is_transformer(model):
            self._validate_transformer()
        else:
            get_criterion(self.criterion)  # an unknown criterion fails here, not after the evaluation
            if self.units is not None:
                raise PruningError(f"units={self.units!r} applies to transformers; this model has no attention "
                                   "layers (its units are filters: leave --units out)")
        if self.ignored_layers is not None:
            ignored_names(model, self.ignored_layers)  # a name the model lacks fails here
        if self.sfp_epochs and self.ratio is None:
            raise PruningError("soft filter pruning zeroes a fixed fraction per layer: give --ratio")
        if self.reconstruct and self.steps > 1 and getattr(model, "neurotomy_meta", None) is None:
            raise PruningError("reconstruction after an iterative prune follows the checkpoint recipe, which this "
                               "model lacks: load it with neurotomy.load_model, or prune in one step")
        if self.steps > 1 and self.target_macs is None:
            raise PruningError("an iterative schedule reaches a MACs target: give --target-macs")

    def _check_reachable(self, model: nn.Module, shape: tuple[int, ...]) -> None:
        """A filter prune whose amount cannot be met (a target beyond what ``min_channels`` and
        ``round_to`` leave, a ratio that cuts nothing) fails here, before the evaluation and the
        scoring (:func:`neurotomy.surgery.planner.check_reachable`)."""
        if self.layers or self._to_latency() or is_transformer(model):
            return
        check_reachable(model, ratio=self.ratio, target_macs=self.target_macs, target_params=self.target_params,
                        scope=self.scope, min_channels=self.min_channels, ignored_layers=self.ignored_layers,
                        round_to=self.round_to, inner_only=self.inner_only, input_shape=shape)

    def _to_latency(self) -> bool:
        return self.target_speedup is not None or self.target_latency_ms is not None

    def _validate_transformer(self) -> None:
        units = self._units()
        for unit in units:
            if self.criterion not in transformer_criteria(unit):
                raise PruningError(f"criterion {self.criterion!r} does not score transformer {unit}s; use one of "
                                   f"{', '.join(transformer_criteria(unit))} (see `neurotomy criteria`)")
        if self.steps > 1 or self.sfp_epochs or self.inner_only:
            raise PruningError("transformers are pruned in one step: leave out --steps, --sfp-epochs and --inner-only")

    def _cut(self, model: nn.Module, scores: UnitScores | list[UnitScores] | None, train_data: Dataset, shape,
             state: RunState | None = None) -> PruningResult:
        """One-shot, iterative (``steps`` > 1) or soft filter pruning (``sfp_epochs`` > 0)."""
        shared = dict(scope=self.scope, min_channels=self.min_channels, ignored_layers=self.ignored_layers,
                      round_to=self.round_to, inner_only=self.inner_only, input_shape=shape)
        if self.layers:
            return self._remove_blocks(model, train_data, shape)
        if is_transformer(model):
            families = {"head": "heads", "neuron": "neurons", "embedding": "embedding"}
            units = [families[u] for u in self._units()]
            # a target shared by several unit families: how much each gives is chosen by the loss on a few
            # seeded training batches (the residual stream costs far more accuracy per MAC than its scores say)
            calibration = None
            images = calibration_images(count_macs_params(model, shape)[0]) if self.ratio is None and len(units) > 1 \
                else 0
            if images:
                calibration = list(iterate_batches(train_data, 128, shuffle=True, max_images=images,
                                                   generator=torch.Generator().manual_seed(self.seed)))
            if self._to_latency():
                result = prune_transformer_to_latency(
                    model, scores, target_speedup=self.target_speedup, target_latency_ms=self.target_latency_ms,
                    units=units, scope=self.scope, min_channels=self.min_channels, ignored_layers=self.ignored_layers,
                    round_to=self.round_to, input_shape=shape, calibration=calibration,
                    latency_batch=self.latency_batch, threads=self.threads, runtime=self.latency_runtime)
            else:
                result = prune_transformer(model, scores, units=units, ratio=self.ratio,
                                           target_macs=self.target_macs, target_params=self.target_params,
                                           scope=self.scope, min_channels=self.min_channels,
                                           ignored_layers=self.ignored_layers, round_to=self.round_to,
                                           input_shape=shape, calibration=calibration)
            result.details["calibration_images"] = images  # 0: the split was chosen without data
            return result
        if self.sfp_epochs:
            config = TrainConfig(epochs=self.sfp_epochs, lr=self.finetune_lr, schedule="cosine",
                                 seed=self.seed, quiet=self.quiet)
            return soft_filter_pruning(copy.deepcopy(model), train_data, self.ratio, config, state=state, **shared)
        if self.steps > 1:
            return prune_iteratively(model, self.criterion, train_data, target_macs=self.target_macs,
                                     steps=self.steps, finetune_epochs=self.finetune_between,
                                     finetune_lr=self.finetune_lr,
                                     seed=self.seed, quiet=self.quiet, score_images=self.score_images,
                                     state=state, **shared)
        if self._to_latency():
            return prune_filters(model, scores, target_speedup=self.target_speedup,
                                 target_latency_ms=self.target_latency_ms, latency_batch=self.latency_batch,
                                 threads=self.threads, runtime=self.latency_runtime, latency_cache=self.latency_cache,
                                 quiet=self.quiet, **shared)
        return prune_filters(model, scores, ratio=self.ratio, target_macs=self.target_macs,
                             target_params=self.target_params, **shared)


def _score_seconds(scores: UnitScores | list[UnitScores] | None) -> float | None:
    if scores is None:
        return None
    parts = scores if isinstance(scores, list) else [scores]
    seconds = [part.info.get("seconds") for part in parts]
    return None if any(s is None for s in seconds) else sum(seconds)


def _conv_criterion(name: str):
    """The conv criterion ``name``, or None for a transformer-only one (e.g. attention_entropy)."""
    try:
        return get_criterion(name)
    except NeurotomyError:
        return None


def kept_output_channels(model: nn.Module, pruned: nn.Module, cuts: list[Cut],
                         shape: tuple[int, ...]) -> dict[str, list[int]]:
    """For each conv/linear layer of ``pruned``, the output channels of ``model`` it kept, in order:
    the surgery is replayed on a copy of ``model`` whose every filter holds its own index, so the
    survivors name themselves whatever the coupling. The surgery is read from ``pruned``'s
    checkpoint recipe (every step: iterative prunes, removed blocks, transformer heads) or, for a
    model without one, is ``cuts`` (a one-shot prune)."""
    before, after = getattr(model, "neurotomy_meta", None), getattr(pruned, "neurotomy_meta", None)
    tagged = copy.deepcopy(model).float()  # float32 holds every index below 2**24 exactly
    widths = {n: m.weight.shape[0] for n, m in tagged.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    with torch.no_grad():
        for m in map(tagged.get_submodule, widths):
            index = torch.arange(m.weight.shape[0], dtype=m.weight.dtype, device=m.weight.device)
            m.weight.copy_(index.view(-1, *[1] * (m.weight.dim() - 1)).expand_as(m.weight))
    if before is not None and after is not None and after.recipe[:len(before.recipe)] == before.recipe:
        survivors = replay_recipe(tagged, after.recipe[len(before.recipe):], shape)
    else:
        survivors = apply_cuts(tagged, cuts, shape)
    kept = {}
    for name, m in survivors.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and name in widths:
            tags = m.weight.detach().reshape(m.weight.shape[0], -1)[:, 0].tolist()
            if all(t.is_integer() and 0 <= t < widths[name] for t in tags) and len(set(tags)) == len(tags):
                kept[name] = [int(t) for t in tags]  # else a module the surgery rebuilt: its tags are gone
    return kept


def scores_record(scores: UnitScores) -> dict:
    """``scores`` as tensors and JSON values, for a :class:`~neurotomy.run_state.RunState` stage."""
    return {"scores": dict(scores), "criterion": scores.criterion, "axis": scores.axis, "info": scores.info}


def scores_from_record(record: dict) -> UnitScores:
    return UnitScores(record["scores"], record["criterion"], record["axis"], record["info"])


def scores_stage(state: RunState | None, name: str, compute: Callable[[], UnitScores]) -> UnitScores:
    """``compute()``, saved in ``state`` as stage ``name``; on resume, the saved scores instead."""
    if state is not None and state.has_stage(name):
        return scores_from_record(state.load_stage(name))
    scores = compute()
    if state is not None:
        state.save_stage(name, scores_record(scores))
    return scores


def forward_seconds(model: nn.Module, data: Dataset, images: int, batch_size: int = 128) -> float:
    """Seconds for one plain forward pass over ``images`` images (the yardstick for scoring cost)."""
    where = model_device(model)
    start = time.perf_counter()
    with torch.inference_mode():
        for x, _ in iterate_batches(data, batch_size, max_images=images):
            model(to_device(where, x))
    return time.perf_counter() - start
