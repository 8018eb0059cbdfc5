"""Deploy a model to a CPU: export to ONNX (verified against PyTorch), quantize to int8, and measure
it as it will run — accuracy on the test set, size on disk, onnxruntime latency at batch 1 and B —
and whether the deployed model still decides for the same reasons.

The deployed files have no gradients, so the reasons are compared with the perturbation methods
that need only outputs, occlusion (Zeiler & Fergus 2014) and RISE (Petsiuk et al. 2018), computed
through onnxruntime for the fp32 and int8 files and through PyTorch for the model itself — the same
registered methods, the same seeded masks, the same images and targets (the reference PyTorch
model's predictions) — and compared as ``compare-reasons`` compares two models: Spearman correlation
of the maps by magnitude and IoU of their top 10 % pixels, overall and per class
(:func:`neurotomy.explain.metrics.agreement`).

- :func:`deployment_figures` measures one or several models in every format (``torch``,
  ``onnx-fp32``, ``onnx-int8``), timed interleaved with one another: what the benchmark and a report
  section need (original → pruned → pruned + int8).
- :func:`deploy` does it for one model and writes ``DIR/model.onnx``, ``DIR/model.int8.onnx`` and
  ``DIR/deploy.json`` — all or nothing: the files are made in a temporary folder next to ``DIR`` and
  moved in at the end, after every check (an int8 model that loses more than ``max_drop`` points of
  accuracy is refused with the numbers).

Example:
    >>> import tempfile
    >>> from neurotomy.loading import load_model
    >>> from neurotomy.data import load_dataset
    >>> record = deploy(load_model("zoo:lenet5-digits"), tempfile.mkdtemp(), load_dataset("digits"),
    ...                 load_dataset("digits", split="test"), int8=True, calibration_images=64, reason_images=10,
    ...                 rounds=2, quiet=True)
    >>> [row["format"] for row in record["rows"]]
    ['torch', 'onnx-fp32', 'onnx-int8']
    >>> record["rows"][2]["accuracy"] > 0.9 and record["rows"][2]["reasons_spearman"]["occlusion"] > 0.8
    True
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy import validate
from neurotomy.data.batches import iterate_batches
from neurotomy.data.subsets import IndexedSubset, balanced_subset
from neurotomy.device import on_cpu, place
from neurotomy.errors import DataError, ModelError, WorseResultError
from neurotomy.explain import METHODS, attribute
from neurotomy.explain.common import resolve_targets
from neurotomy.explain.metrics import agreement, comparison_options
from neurotomy.export import export_onnx
from neurotomy.files import write_json
from neurotomy.measure import checkpoint_size
from neurotomy.models.anatomy import eval_mode, require_input_shape
from neurotomy.models.data_fit import check_data_fits
from neurotomy.progress import add_task, progress_bar
from neurotomy.quantize import CALIBRATION, CALIBRATIONS, Int8Error, OnnxClassifier, onnx_session, quantize_int8
from neurotomy.timing import interleaved_timing
from neurotomy.train import classification_metrics, predict

FORMATS = ("torch", "onnx-fp32", "onnx-int8")
REASON_METHODS = ("occlusion", "rise")
"""Perturbation methods (outputs only) the deployed files are explained with."""
TOP = 0.10  # top-k % pixels for the IoU, as in the dissect report's same-reasons check
MAX_DROP = 1.0
"""Largest fall of accuracy (percentage points, int8 vs fp32 ONNX) a deployment accepts by default."""
FILES = ("model.onnx", "model.int8.onnx", "deploy.json")


def _check_data(model: nn.Module, shape: tuple[int, ...], data: Dataset, split: str) -> None:
    """Classes and channels (:func:`check_data_fits`), and the image size: an ONNX graph is exported
    for one size, so images of another size cannot run on it."""
    check_data_fits(model, data)
    size = tuple(int(s) for s in data[0][0].shape)
    if size != tuple(shape):
        raise DataError(f"the {split} images are {'×'.join(map(str, size))} but the model takes "
                        f"{'×'.join(map(str, shape))}; give data of the model's size (--input-size {shape[-1]})")


def _images(data: Dataset) -> torch.Tensor:
    return next(iterate_batches(data, len(data)))[0]


def calibration_batch(train: Dataset, images: int, seed: int = 0) -> torch.Tensor:
    """``images`` training images drawn at random (seeded), as one batch: what int8 calibrates on."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:images]
    return _images(IndexedSubset(train, order))


class _Format:
    """One model in one format: what runs it for accuracy and maps, what times it, its size."""

    def __init__(self, label: str, fmt: str, module: nn.Module, timed, size: int, path: str | None = None):
        self.label, self.format, self.module, self.timed, self.bytes, self.path = label, fmt, module, timed, size, path


def _torch_format(label: str, model: nn.Module) -> _Format:
    cpu = on_cpu(model).eval()  # latency is CPU latency, whatever device the maps are computed on

    def timed(x: np.ndarray):
        t = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                cpu(t)
        return run
    return _Format(label, "torch", model, timed, checkpoint_size(model))


def _onnx_format(label: str, fmt: str, path: Path, threads: int) -> _Format:
    """Timed with the stated ``threads``; accuracy and maps computed with as many threads as PyTorch
    computes with (``torch.get_num_threads()``: ``torch.set_num_threads`` and ``OMP_NUM_THREADS`` bound
    onnxruntime too, instead of its default of one thread per core), like for like."""
    timing_session = onnx_session(path, threads)
    name = timing_session.get_inputs()[0].name
    timed = lambda x: (lambda: timing_session.run(None, {name: x}))  # noqa: E731
    return _Format(label, fmt, OnnxClassifier(onnx_session(path, torch.get_num_threads())), timed,
                   os.path.getsize(path), str(path))


def _latency(formats: list[_Format], shape: tuple[int, ...], batch: int, threads: int, rounds: int,
             warn: bool = True) -> list[dict]:
    x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
    return interleaved_timing([f.timed(x) for f in formats], rounds=rounds, repeats=20 if batch == 1 else 3,
                              threads=threads, warn=warn)


def _maps(formats: list[_Format], images: torch.Tensor, targets: torch.Tensor, methods: Sequence[str],
          options: Mapping[str, dict], seed: int, bar, task) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """|map| of every method for every format, on the same images and targets (and seed)."""
    out = {}
    for f in formats:
        out[f.label, f.format] = {}
        for method in methods:
            opts = comparison_options(method, options)
            if "seed" in METHODS[method].options():
                opts.setdefault("seed", seed)
            out[f.label, f.format][method] = attribute(f.module, images, targets, method=method, **opts).abs().cpu()
            bar.advance(task)
    return out


def deployment_figures(models: Mapping[str, nn.Module], train: Dataset, test: Dataset, directory: str | Path, *,
                       int8: bool = True, calibration_images: int = 256, calibration: str = CALIBRATION,
                       threads: int = 1, latency_batch: int = 64, reason_images: int = 20,
                       methods: Sequence[str] = REASON_METHODS, options: Mapping[str, dict] | None = None,
                       eval_images: int | None = None, max_drop: float | None = None, rounds: int = 9,
                       seed: int = 0, quiet: bool | None = None, device: str | torch.device | None = None) -> dict:
    """Every model of ``models`` (label → model, all of one input shape) as deployed: ``torch``,
    ``onnx-fp32`` and, with ``int8``, ``onnx-int8``. The ONNX files are written into ``directory``
    (``model.onnx``/``model.int8.onnx`` for one model, ``model-<i>…`` for several).

    Returns ``{"rows": [...], "reasons": [...], "files": {...}, "settings": {...}, "timing": {...}}``:
    one row per model and format with ``model``, ``format``, ``accuracy``, ``bytes``,
    ``latency_batch1_ms``, ``latency_batch<B>_ms`` (medians of interleaved rounds), ``threads``,
    ``load_average`` and ``reasons_spearman`` / ``reasons_iou`` per method against the first model's
    PyTorch maps (``None`` for that reference itself), plus the prediction agreement with it and the
    speed-ups at batch B over its PyTorch and fp32 ONNX forms; ``reasons`` holds the full agreement
    records (per class too), including each int8 file against its own fp32 file. ``options`` gives
    per-method options, e.g. ``{"rise": {"masks": 4000}}``. ``max_drop`` (points): refuse an int8
    model that loses more accuracy than this against its fp32 file (:class:`WorseResultError`); a model
    onnxruntime cannot quantize raises :class:`~neurotomy.quantize.Int8Error`. ``threads``: the
    onnxruntime and PyTorch threads of the timed runs; the sessions that compute accuracy and maps run
    as many as PyTorch computes with (``settings["compute_threads"]``).
    """
    settings = _settings(int8=int8, calibration_images=calibration_images, calibration=calibration,
                         threads=threads, latency_batch=latency_batch, reason_images=reason_images, methods=methods,
                         options=options, eval_images=eval_images, max_drop=max_drop, rounds=rounds, seed=seed)
    shape = _check_models(models, train, test, device)
    labels = list(models)
    record: dict = {"rows": [], "reasons": [], "files": {}, "reference": labels[0],
                    "settings": {**settings, "input_shape": list(shape), "compute_threads": torch.get_num_threads()}}
    with progress_bar(quiet) as bar:
        task = add_task(bar, "deploy", len(labels) * (3 + (3 if int8 else 2) * (1 + len(settings["methods"])
                                                                                * bool(reason_images))))
        formats = _export(models, Path(directory), shape, train, settings, record, bar, task)
        _accuracy(record, formats, test, eval_images, bar, task)
        if int8 and settings["max_drop"] is not None:
            _refuse_accuracy_drop(record["rows"], settings["max_drop"])
        if reason_images:
            _reasons(record, formats, test, settings, bar, task)
        record["timing"] = _timing(record["rows"], formats, shape, settings)
        bar.advance(task, len(labels))
    return record


def _settings(*, int8: bool, calibration_images, calibration, threads, latency_batch, reason_images, methods,
              options, eval_images, max_drop, rounds, seed) -> dict:
    """Every setting checked before any work, as the record states them."""
    methods = [validate.known_name(m, "methods", names=lambda: METHODS.names(family="black-box"),
                                   kind="output-only method") for m in methods]
    for method, opts in (options or {}).items():
        unknown = sorted(set(opts) - set(METHODS.get(method).options()))
        if unknown:
            raise validate.fail("options", f"method {method!r} has no option {unknown[0]!r}; its options: "
                                           f"{', '.join(METHODS[method].options())}")
    return {"int8": bool(int8),
            "calibration": validate.known_name(calibration, "calibration", names=CALIBRATIONS) if int8 else None,
            "calibration_images": validate.positive_int(calibration_images, "calibration_images") if int8 else None,
            "threads": validate.positive_int(threads, "threads", maximum=1024),
            "latency_batch": validate.positive_int(latency_batch, "latency_batch", maximum=65536),
            "reason_images": validate.non_negative_int(reason_images, "reason_images"),
            "methods": methods, "options": {m: comparison_options(m, options) for m in methods}, "top": TOP,
            "eval_images": None if eval_images is None else validate.positive_int(eval_images, "eval_images"),
            "max_drop": None if max_drop is None else validate.non_negative_float(max_drop, "max_drop"),
            "rounds": validate.positive_int(rounds, "rounds"), "seed": validate.seed(seed, "seed")}


def _check_models(models: Mapping[str, nn.Module], train: Dataset, test: Dataset, device) -> tuple[int, ...]:
    """The models' one input shape, each model checked against both splits and put on ``device``."""
    if not models:
        raise validate.fail("models", "give at least one model")
    labels = list(models)
    shape = tuple(require_input_shape(models[labels[0]], train))
    for label in labels:
        if tuple(require_input_shape(models[label], train)) != shape:
            raise validate.fail("models", f"{label} takes inputs of another shape than {labels[0]}; deploy them apart")
        _check_data(models[label], shape, train, "calibration (training)")
        _check_data(models[label], shape, test, "test")
        place(models[label], device)
    return shape


def _export(models: Mapping[str, nn.Module], directory: Path, shape: tuple[int, ...], train: Dataset,
            settings: dict, record: dict, bar, task) -> list[_Format]:
    """Each model's fp32 ONNX file (checked against PyTorch) and, with int8, its quantized file."""
    stems = ["model"] if len(models) == 1 else [f"model-{i}" for i in range(len(models))]
    images = calibration_batch(train, settings["calibration_images"], settings["seed"]) if settings["int8"] else None
    formats = []
    for (label, model), stem in zip(models.items(), stems):
        model.eval()
        fp32 = export_onnx(model, directory / f"{stem}.onnx", input_shape=shape, seed=settings["seed"])
        record["files"][label] = {"onnx-fp32": fp32}
        formats += [_torch_format(label, model), _onnx_format(label, "onnx-fp32", Path(fp32["path"]),
                                                               settings["threads"])]
        bar.advance(task)
        if images is not None:
            q = quantize_int8(fp32["path"], directory / f"{stem}.int8.onnx", images, settings["calibration"])
            record["files"][label]["onnx-int8"] = q
            formats.append(_onnx_format(label, "onnx-int8", Path(q["path"]), settings["threads"]))
        bar.advance(task)
    return formats


def _accuracy(record: dict, formats: list[_Format], test: Dataset, eval_images: int | None, bar, task) -> None:
    """A row per format: test accuracy (the same :func:`~neurotomy.train.predict` for every format) and
    how often it predicts what the reference PyTorch model predicts."""
    predictions = []
    for f in formats:
        logits, targets = predict(f.module, test, max_images=eval_images, quiet=True)
        predictions.append(logits.argmax(1))
        metrics = classification_metrics(predictions[-1], targets, logits.shape[1])
        record["rows"].append({"model": f.label, "format": f.format, "accuracy": metrics["accuracy"],
                               "n": metrics["n"], "bytes": f.bytes, "path": f.path,
                               "prediction_agreement": float((predictions[-1] == predictions[0]).float().mean())})
        bar.advance(task)


def _refuse_accuracy_drop(rows: list[dict], max_drop: float) -> None:
    by = {(r["model"], r["format"]): r["accuracy"] for r in rows}
    for (label, fmt), acc in by.items():
        if fmt != "onnx-int8":
            continue
        fp32 = by[label, "onnx-fp32"]
        drop = (fp32 - acc) * 100
        if drop > max_drop:
            raise WorseResultError(
                f"int8 accuracy {acc:.2%} is {drop:.2f} pt below the fp32 ONNX model's {fp32:.2%} (more than "
                f"--max-drop {max_drop:g}); nothing written — calibrate on more images (--calibration-images), "
                "raise --max-drop, or deploy without --int8")


def _reasons(record: dict, formats: list[_Format], test: Dataset, settings: dict, bar, task) -> None:
    """Maps of every format on class-balanced test images, for the reference PyTorch model's
    predicted classes, compared with the reference's maps and each int8 file with its fp32 file."""
    methods, seed = settings["methods"], settings["seed"]
    x = _images(balanced_subset(test, settings["reason_images"], seed))
    reference = formats[0]
    with eval_mode(reference.module):
        targets = resolve_targets(reference.module, x, None).cpu()
    maps = _maps(formats, x, targets, methods, settings["options"], seed, bar, task)
    ref = reference.label, "torch"
    pairs = [((f.label, f.format), ref) for f in formats[1:]]
    pairs += [((f.label, "onnx-int8"), (f.label, "onnx-fp32")) for f in formats if f.format == "onnx-int8"]
    against_reference = {}
    for own, other in pairs:
        compared = {m: agreement(maps[other][m], maps[own][m], targets, TOP) for m in methods}
        record["reasons"].append({"model": own[0], "format": own[1], "against": {"model": other[0], "format": other[1]},
                                  "methods": compared})
        if other == ref:
            against_reference[own] = compared
    for row in record["rows"]:
        compared = against_reference.get((row["model"], row["format"]))  # None: the reference itself
        row["reasons_spearman"] = compared and {m: a["spearman"] for m, a in compared.items()}
        row["reasons_iou"] = compared and {m: a["iou"] for m, a in compared.items()}
    record["reason_targets"] = targets.tolist()


def _timing(rows: list[dict], formats: list[_Format], shape, settings: dict) -> dict:
    """Interleaved onnxruntime and PyTorch latency at batch 1 and B, written into the rows; speed-ups
    at B over the reference's PyTorch and fp32 ONNX forms."""
    threads, batch, rounds = settings["threads"], settings["latency_batch"], settings["rounds"]
    # the busy-machine warning once, not once per batch size
    timings = {b: _latency(formats, shape, b, threads, rounds, warn=i == 0)
               for i, b in enumerate(dict.fromkeys((1, batch)))}
    key = f"latency_batch{batch}_ms"
    for row, first, last in zip(rows, timings[1], timings[batch]):
        row["latency_batch1_ms"], row[key] = first["median_ms"], last["median_ms"]
        row["latency_min_ms"] = {"batch1": first["min_ms"], f"batch{batch}": last["min_ms"]}
        row["threads"] = threads
        row["load_average"] = [first["load_average"][0], last["load_average"][1]]
        row["machine_busy"] = first["machine_busy"] or last["machine_busy"]
    reference = rows[0]["model"]
    base = {r["format"]: r[key] for r in rows if r["model"] == reference}
    for row in rows:
        row[f"speedup_batch{batch}_vs_torch"] = base["torch"] / row[key]
        row[f"speedup_batch{batch}_vs_onnx_fp32"] = base["onnx-fp32"] / row[key]
    return {"batches": sorted(timings), "rounds": rounds, "threads": threads,
            "load_average": [timings[1][0]["load_average"][0], timings[batch][-1]["load_average"][1]]}


def deploy(model: nn.Module, out: str | Path, train: Dataset, test: Dataset, *, label: str = "model",
           int8: bool = False, calibration_images: int = 256, threads: int = 1, latency_batch: int = 64,
           max_drop: float = MAX_DROP, reason_images: int = 20, methods: Sequence[str] = REASON_METHODS,
           eval_images: int | None = None, rounds: int = 9, seed: int = 0, quiet: bool | None = None,
           device: str | torch.device | None = None) -> dict:
    """Export ``model`` to ``out/model.onnx`` (and with ``int8`` to ``out/model.int8.onnx``, calibrated
    on ``calibration_images`` images of ``train``), measure it on ``test`` (see
    :func:`deployment_figures`) and write the record to ``out/deploy.json``; returns the record.
    Nothing is written unless every step succeeds (an int8 model more than ``max_drop`` points less
    accurate than the fp32 one is refused). ``device``: where the PyTorch model's accuracy and maps are
    computed; ONNX runs on the CPU, and every latency is CPU latency."""
    out = validate.output_dir(out, "out")
    max_drop = validate.non_negative_float(max_drop, "max_drop")
    work = out.parent / f".{out.name}.deploy-{os.getpid()}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        try:
            record = deployment_figures({label: model}, train, test, work, int8=int8,
                                        calibration_images=calibration_images, threads=threads,
                                        latency_batch=latency_batch, reason_images=reason_images, methods=methods,
                                        eval_images=eval_images, max_drop=max_drop, rounds=rounds, seed=seed,
                                        quiet=quiet, device=device)
        except Int8Error as exc:  # the deploy user asked for int8: going without it is theirs to choose
            raise ModelError(f"{exc.problem}; nothing written — {exc.fix}, or deploy without --int8") from None
        record["data"] = {"train": getattr(train, "name", None), "test": getattr(test, "name", None)}
        _move_into(record, work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record


def _move_into(record: dict, work: Path, out: Path) -> None:
    """The files of ``work`` into ``out`` (each rename atomic), the record last; a stale int8 file
    of an earlier run is removed when this run made none."""
    out.mkdir(parents=True, exist_ok=True)
    for files in record["files"].values():
        for entry in files.values():
            entry["path"] = str(out / Path(entry["path"]).name)
    for row in record["rows"]:
        if row["path"]:
            row["path"] = str(out / Path(row["path"]).name)
    write_json(work / "deploy.json", record)
    for name in FILES:
        if (work / name).exists():
            os.replace(work / name, out / name)
        elif name == "model.int8.onnx" and (out / name).exists():
            (out / name).unlink()


__all__ = ["FORMATS", "MAX_DROP", "REASON_METHODS", "TOP", "calibration_batch", "deploy", "deployment_figures"]
