"""Planning and cutting torchvision/timm transformers at a small input: seconds and peak memory per cut
against the targets of issue #21 (≤ 60 s and ≤ 2 GB for any torchvision/timm model).

For each model (``--models SPEC@SIZE …``; default torchvision ``swin_t`` at 64 px, ``maxvit_t`` at
224 px, ``vit_b_16`` at 32 px, timm ``swin_tiny_patch4_window7_224`` at 64 px and
``deit_tiny_patch16_224`` at 224 px, all with random weights, 3 input channels, 10 classes) and each
cut (``--cuts``), a FRESH Python process (so its peak memory is that cut's alone):

* imports torch and neurotomy and reads its resident memory: ``baseline_mb`` (what any process of this
  tool costs before it holds a model);
* loads the model (random init) and scores it by the L1 norm of the weights: ``filters`` every Linear's
  and Conv2d's output units (``neurotomy.surgery.filters.prune_filters``, ``target_macs=0.1``: −10 %
  MACs), ``neurons`` and ``heads`` by ``neurotomy.scores.score_transformer(model, "l1", …)`` and cut by
  ``neurotomy.surgery.transformer.prune_transformer`` (``units="neurons", ratio=0.2``; ``units="heads",
  ratio=1/3``: one head of three), and ``target``: heads and neurons to −30 % MACs with the split between
  them searched on calibration images (random ones, as many as ``neurotomy prune`` takes for the model:
  ``neurotomy.jobs.prune.calibration_images``) — the default path of ``neurotomy prune`` on a transformer,
  where each of ~10 candidates is cut and run. ``heads`` runs only where ``attention_sites`` finds attention
  that ``prune_transformer`` can cut;
* ``seconds`` = plan + cut (the scoring before it is ``score_seconds``), ``peak_mb`` = the process's
  VmHWM from ``/proc/self/status`` after the cut (not ``ru_maxrss``: Linux carries a forking parent's
  peak into the child's), which includes ``baseline_mb`` and the model.

A child that runs past ``--timeout`` seconds or past ``--memory-limit-mb`` of resident memory (watched
from outside) is stopped and its cut recorded as a miss with what was seen, never left to hang. A cut
that raises is recorded with the error's one line. Every record carries the targets and whether they were
met, and a ``neurotomy.provenance`` stamp (git commit, argv, threads, the load at its start and end).

Usage: python benchmarks/transformer_scale.py [--models torchvision:swin_t@64 …] [--threads 1]
Writes benchmarks/results/transformer_scale.json and transformer_scale.png (``--out`` elsewhere for a trial).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from neurotomy.errors import ModelError, NeurotomyError, OptionError
from neurotomy.files import write_json
from neurotomy.loading import check_model_spec, model_spec_kind
from neurotomy.models.sources import timm_defaults
from neurotomy.provenance import begin_stamp, end_stamp

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_MODELS = ("torchvision:swin_t@64", "timm:swin_tiny_patch4_window7_224@64", "torchvision:maxvit_t@224",
                  "timm:deit_tiny_patch16_224@224", "torchvision:vit_b_16@32")
CUTS = {"filters": "prune_filters(target_macs=0.1)", "neurons": "prune_transformer(units='neurons', ratio=0.2)",
        "heads": "prune_transformer(units='heads', ratio=1/3)",
        "target": "prune_transformer(units=['heads', 'neurons'], target_macs=0.3, calibration=the job's image count "
                  "of random images and labels), as `neurotomy prune` does by default"}
TARGET_SECONDS = 60.0
TARGET_PEAK_MB = 2048.0
TIMEOUT_S = 600.0
MEMORY_LIMIT_MB = 8192.0  # 4 × the target: far enough past it to be a clear miss, well inside this machine
POLL_S = 0.1

# The child process. JOB (prepended by child_script) holds spec, size, cuts, threads, seed. One JSON line
# per event on stdout: {"event": "baseline", …}, {"event": "loaded", …}, then per cut {"event": "start", …}
# and {"event": "cut", …}.
CHILD = r'''
import json, time, warnings


def mb(key):
    """VmRSS / VmHWM of this process in MB (/proc/self/status: kB)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":")) / 1024


def emit(**fields):
    print(json.dumps(fields), flush=True)


import torch
torch.set_num_threads(JOB["threads"])
from torch import nn
warnings.simplefilter("ignore")
from neurotomy.jobs.prune import calibration_images
from neurotomy.loading import load_model
from neurotomy.models.summary import count_macs_params
from neurotomy.models.transformer import attention_sites
from neurotomy.scores import score_transformer
from neurotomy.scores.unit_scores import UnitScores
from neurotomy.surgery.attention import head_refusal
from neurotomy.surgery.filters import prune_filters
from neurotomy.surgery.transformer import prune_transformer
emit(event="baseline", baseline_mb=mb("VmRSS"), threads=torch.get_num_threads())
torch.manual_seed(JOB["seed"])
start = time.perf_counter()
model = load_model(JOB["spec"], in_channels=3, num_classes=10, input_size=JOB["size"])
sites = attention_sites(model)
refusals = [head_refusal(s) for s in sites]
emit(event="loaded", load_seconds=time.perf_counter() - start, model_mb=mb("VmRSS"), attention_layers=len(sites),
     cuttable_attention_layers=refusals.count(None),
     head_refusal=next((f"{s.name}: {r}" for s, r in zip(sites, refusals) if r), None))


def scores_for(cut):
    if cut == "filters":
        return UnitScores({n: m.weight.detach().abs().flatten(1).sum(1) for n, m in model.named_modules()
                           if isinstance(m, (nn.Linear, nn.Conv2d))}, "l1")
    if cut == "target":
        return [score_transformer(model, "l1", unit) for unit in ("head", "neuron")]
    return score_transformer(model, "l1", {"neurons": "neuron", "heads": "head"}[cut])


def calibration(shape):
    """Random images and labels, as many as PruneJob takes for this model (fewer for a costly one; None:
    too costly for any, the data-free split)."""
    count = calibration_images(count_macs_params(model, shape)[0])
    g = torch.Generator().manual_seed(JOB["seed"])
    sizes = [min(128, count - i) for i in range(0, count, 128)]
    return [(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in sizes] or None


def cut_with(cut, scores):
    if cut == "filters":
        return prune_filters(model, scores, target_macs=0.1)
    if cut == "target":
        shape = (3, JOB["size"], JOB["size"])
        return prune_transformer(model, scores, units=["heads", "neurons"], target_macs=0.3, input_shape=shape,
                                 calibration=calibration(shape))
    return prune_transformer(model, scores, units=cut, ratio={"neurons": 0.2, "heads": 1 / 3}[cut])


for cut in JOB["cuts"]:
    record = {"event": "cut", "cut": cut, "ok": False, "error": None, "score_seconds": None, "seconds": None,
              "macs_reduction": None}
    emit(event="start", cut=cut, at=time.time())  # the parent's measure of a cut it has to stop
    start = time.perf_counter()
    try:
        scores = scores_for(cut)
        scored = time.perf_counter()
        record["score_seconds"] = scored - start
        result = cut_with(cut, scores)
        record["seconds"] = time.perf_counter() - scored
        record.update(ok=True, macs_reduction=result.macs_reduction,
                      details={k: v for k, v in result.details.items() if k.endswith("_removed")})
    except Exception as exc:  # the benchmark records what failed, in one line, and goes on
        record["seconds"] = time.perf_counter() - start
        record["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    record["peak_mb"] = mb("VmHWM")
    emit(**record)
'''


def parse_model(text: str) -> tuple[str, int]:
    """``"torchvision:swin_t@64"`` → ``("torchvision:swin_t", 64)``; anything else is a one-line
    :class:`OptionError` / :class:`ModelError` (checked before any work: the spec as ``neurotomy.loading``
    checks it, and a torchvision or timm name as its source would).

    Example:
        >>> parse_model("timm:deit_tiny_patch16_224@224")
        ('timm:deit_tiny_patch16_224', 224)
    """
    spec, at, size = text.rpartition("@")
    if not at or not spec:
        raise OptionError(f"--models {text!r}: give SPEC@SIZE, e.g. torchvision:swin_t@64 (the input size in pixels)")
    if not size.isdigit() or int(size) < 1:
        raise OptionError(f"--models {text!r}: the input size after '@' must be a positive whole number of pixels, "
                          "e.g. torchvision:swin_t@64")
    check_model_spec(spec)
    kind = model_spec_kind(spec)
    if kind == "torchvision":  # a misspelt name fails here, not after the other models have been measured
        import torchvision

        if spec.partition(":")[2] not in torchvision.models.list_models():
            raise ModelError(f"--models {text!r}: torchvision has no model {spec.partition(':')[2]!r}; "
                             "see torchvision.models.list_models()")
    elif kind == "timm":
        timm_defaults(spec.partition(":")[2], int(size))  # the loader's own check of the name
    return spec, int(size)


def child_script(spec: str, size: int, cuts: list[str] | tuple[str, ...], threads: int = 1, seed: int = 0) -> str:
    """The Python source the fresh process runs (``python -c``) for ``spec`` at ``size`` px: it prints one
    JSON line per event — ``baseline`` (``baseline_mb``), ``loaded`` (``model_mb``, ``attention_layers``,
    ``cuttable_attention_layers``, ``head_refusal``) and per cut a ``start`` line and a ``cut`` line
    (``ok``, ``error``, ``score_seconds``, ``seconds``, ``macs_reduction``, ``peak_mb``). Read them with
    :func:`read_events`.

    Example:
        >>> "prune_filters" in child_script("torchvision:swin_t", 64, ["filters"])
        True
    """
    unknown = [c for c in cuts if c not in CUTS]
    if unknown:
        raise OptionError(f"unknown cut {unknown[0]!r}; use {', '.join(CUTS)}")
    job = {"spec": spec, "size": int(size), "cuts": list(cuts), "threads": int(threads), "seed": int(seed)}
    return f"JOB = {json.dumps(job)!r}\nimport json as _json\nJOB = _json.loads(JOB)\n{CHILD}"


def read_events(stdout: str) -> list[dict]:
    """The JSON event lines of a child's stdout (other lines, e.g. a library's print, are skipped)."""
    events = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def _proc_mb(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(key + ":")) / 1024
    except (OSError, StopIteration, ValueError):
        return None  # the process has exited


def run_child(spec: str, size: int, cut: str, *, threads: int, seed: int, timeout: float, memory_limit_mb: float,
              workdir: Path) -> dict:
    """Run one cut of one model in a fresh process, watched: ``{"events": [...], "stopped": None | why,
    "wall_seconds", "watched_peak_mb", "returncode", "stderr_tail"}``. Past ``timeout`` seconds or
    ``memory_limit_mb`` of resident memory the child is killed and ``stopped`` says why."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out_path, err_path = workdir / f"{os.getpid()}-{time.monotonic_ns()}.out", workdir / "child.err"
    stopped, watched = None, 0.0
    start = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        child = subprocess.Popen([sys.executable, "-c", child_script(spec, size, [cut], threads, seed)], stdout=out,
                                 stderr=err, cwd=workdir, env=env)
        while child.poll() is None:
            watched = max(watched, _proc_mb(child.pid, "VmHWM") or 0.0)
            elapsed = time.perf_counter() - start
            if elapsed > timeout:
                stopped = f"stopped after {elapsed:.0f} s (--timeout {timeout:g} s)"
            elif watched > memory_limit_mb:
                stopped = f"stopped at {watched:.0f} MB resident (--memory-limit-mb {memory_limit_mb:g})"
            if stopped:
                child.kill()
                child.wait()
                break
            time.sleep(POLL_S)
    wall, ended_at = time.perf_counter() - start, time.time()
    stderr = err_path.read_text(errors="replace").strip().splitlines()
    return {"events": read_events(out_path.read_text(errors="replace")), "stopped": stopped, "wall_seconds": wall,
            "ended_at": ended_at, "watched_peak_mb": watched or None, "returncode": child.returncode,
            "stderr_tail": stderr[-1:]}


def make_record(spec: str, size: int, cut: str, run: dict) -> dict:
    """One record from a child's run (see :func:`run_child`): the measurements, ``ok`` / ``error``, and
    the targets with met flags (a failed or stopped cut meets nothing).

    Example:
        >>> run = {"events": [{"event": "baseline", "baseline_mb": 900.0, "threads": 1},
        ...                   {"event": "cut", "cut": "neurons", "ok": True, "error": None, "seconds": 2.0,
        ...                    "score_seconds": 0.1, "macs_reduction": 0.15, "peak_mb": 1500.0}],
        ...        "stopped": None, "wall_seconds": 9.0, "ended_at": 0.0, "watched_peak_mb": 1490.0, "returncode": 0,
        ...        "stderr_tail": []}
        >>> r = make_record("timm:deit_tiny_patch16_224", 224, "neurons", run)
        >>> r["ok"], r["met"], r["seconds_met"], r["peak_met"]
        (True, True, True, True)
    """
    events = {e.get("event"): e for e in run["events"]}
    done = events.get("cut", {})
    record = {"model": spec, "input_size": size, "cut": cut, "request": CUTS[cut],
              "ok": bool(done.get("ok")), "error": done.get("error"),
              "seconds": done.get("seconds"), "score_seconds": done.get("score_seconds"),
              "peak_mb": done.get("peak_mb"), "baseline_mb": events.get("baseline", {}).get("baseline_mb"),
              "model_mb": events.get("loaded", {}).get("model_mb"),
              "load_seconds": events.get("loaded", {}).get("load_seconds"),
              "macs_reduction": done.get("macs_reduction"), "removed": done.get("details"),
              "child_threads": events.get("baseline", {}).get("threads"), "wall_seconds": run["wall_seconds"],
              "stopped": run["stopped"]}
    if run["stopped"]:  # seconds: since the cut began (else since the child began), at least this long
        began = events.get("start", {}).get("at")
        record.update(ok=False, error=run["stopped"], peak_mb=record["peak_mb"] or run["watched_peak_mb"],
                      seconds=run["ended_at"] - began if began is not None else run["wall_seconds"])
    elif not done:  # the child died before its cut line (an import error, a crash, the OOM killer)
        tail = run["stderr_tail"][0] if run["stderr_tail"] else "no output"
        record.update(ok=False, error=f"child exited with status {run['returncode']}: {tail}",
                      peak_mb=run["watched_peak_mb"], seconds=run["wall_seconds"])
    record.update(target_seconds=TARGET_SECONDS, target_peak_mb=TARGET_PEAK_MB,
                  seconds_met=record["ok"] and record["seconds"] is not None and record["seconds"] <= TARGET_SECONDS,
                  peak_met=record["ok"] and record["peak_mb"] is not None and record["peak_mb"] <= TARGET_PEAK_MB)
    record["met"] = record["seconds_met"] and record["peak_met"]
    return record


def applicable(cut: str, loaded: dict | None) -> bool:
    """Whether ``cut`` is measured on a model whose child reported ``loaded`` (its ``loaded`` event;
    ``None``: not known yet, so measured): heads only where some attention layer's heads can be cut
    (:func:`neurotomy.surgery.attention.head_refusal` finds none refused, e.g. not Swin's, whose relative
    position bias table is per head)."""
    return cut != "heads" or loaded is None or loaded.get("cuttable_attention_layers", 0) > 0


def skipped_line(spec: str, size: int, cut: str, loaded: dict) -> str:
    """Why ``cut`` was not measured on ``spec``."""
    why = (f"prune_transformer refuses every attention layer's heads ({loaded['head_refusal']})"
           if loaded.get("attention_layers") else "no attention layer that attention_sites recognises")
    return f"{spec}@{size} {cut}: not measured: {why}"


def summary_line(r: dict) -> str:
    """The one line a record prints."""
    def num(value, fmt):
        return "–" if value is None else format(value, fmt)
    head = f"{r['model']}@{r['input_size']} {r['cut']:<7}"
    if not r["ok"]:
        return (f"{head} FAILED ({r['error']}) after {num(r['seconds'], '.1f')} s, peak {num(r['peak_mb'], '.0f')} MB "
                f"(baseline {num(r['baseline_mb'], '.0f')} MB)")
    return (f"{head} {r['seconds']:6.1f} s (+{r['score_seconds']:.1f} s scoring), peak {r['peak_mb']:5.0f} MB "
            f"(baseline {num(r['baseline_mb'], '.0f')} MB), MACs −{100 * r['macs_reduction']:.1f} %: "
            f"{'met' if r['met'] else 'NOT met'} (≤ {r['target_seconds']:g} s, ≤ {r['target_peak_mb']:g} MB), "
            f"load {r['load_average_start'][0]:.2f} → {r['load_average_end'][0]:.2f}")


def plot(results: dict, path: Path) -> None:
    """Two bar panels, seconds and peak MB per model/cut, with the target lines; a failed cut's bar is hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    records = results["records"]
    labels = [f"{r['model'].split(':', 1)[-1]}@{r['input_size']}\n{r['cut']}" for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.3 * len(records) + 3), 4.8), squeeze=False)
    panels = ((axes[0][0], "seconds", "seconds_met", TARGET_SECONDS, "plan + cut (s, log)"),
              (axes[0][1], "peak_mb", "peak_met", TARGET_PEAK_MB, "peak resident memory (MB)"))
    for ax, field, met, target, unit in panels:
        values = [r[field] or 0.0 for r in records]
        colours = ["tab:green" if r[met] else "tab:orange" if r["ok"] else "tab:red" for r in records]
        if field == "peak_mb":
            ax.bar(range(len(records)), [r["baseline_mb"] or 0.0 for r in records], color="none", edgecolor="black",
                   lw=0.8, ls=":", zorder=3, label="of it: import torch + neurotomy")
        else:
            ax.set_yscale("log")
        bars = ax.bar(range(len(records)), values, color=colours)
        for bar, r, value in zip(bars, records, values):
            if not r["ok"]:
                bar.set_hatch("//")
            ax.annotate("failed" if not r["ok"] else f"{value:.1f}" if field == "seconds" else f"{value:.0f}",
                        (bar.get_x() + bar.get_width() / 2, max(value, 1e-3)), ha="center", va="bottom", fontsize=7)
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target ≤ {target:g}")
        ax.set_xticks(range(len(records)), labels, fontsize=7, rotation=30, ha="right")
        ax.set_ylabel(unit)
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylim(0.05, TARGET_SECONDS * 10)
    axes[0][1].set_ylim(0, max([TARGET_PEAK_MB] + [r["peak_mb"] or 0.0 for r in records]) * 1.15)
    threads = {r.get("threads") for r in records}
    fig.suptitle("issue #21: planning and cutting at a small input (a fresh process per cut; red hatched: failed; "
                 f"{'/'.join(map(str, sorted(t for t in threads if t is not None)))} thread(s))", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def parse_args(argv=None) -> argparse.Namespace:
    """The options, checked before any work (a bad one is an :class:`OptionError`: one line, exit 2)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help="SPEC@SIZE: a model neurotomy.load_model takes (torchvision:NAME, timm:NAME, …) and its "
                             "input size in pixels (default: %(default)s)")
    parser.add_argument("--cuts", nargs="+", default=list(CUTS), help=f"of {', '.join(CUTS)} (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every child (default 1)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help="seconds a child may run before it is stopped and recorded as a miss (default 600)")
    parser.add_argument("--memory-limit-mb", type=float, default=MEMORY_LIMIT_MB,
                        help="resident MB at which a child is stopped and recorded as a miss (default 8192)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    parser.add_argument("--quiet", action="store_true", help="no line per record")
    parser.add_argument("--out", default=str(RESULTS), help="directory for transformer_scale.json and .png "
                                                             "(trial runs: a temporary directory)")
    args = parser.parse_args(argv)
    args.models = [parse_model(m) for m in args.models]
    unknown = [c for c in args.cuts if c not in CUTS]
    if unknown:
        raise OptionError(f"--cuts {unknown[0]!r}: not a cut; use {', '.join(CUTS)}")
    if args.threads < 1:
        raise OptionError("--threads must be at least 1")
    if args.timeout <= 0 or args.memory_limit_mb <= 0:
        raise OptionError("--timeout and --memory-limit-mb must be positive")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise OptionError(f"--out {args.out}: not a directory")
    return args


def main(argv=None) -> dict:
    """Run the benchmark; returns the results written to ``OUT/transformer_scale.json``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # the stamps' threads: every child runs with this many
    out = Path(args.out)
    results = {
        "question": "issue #21: does planning and cutting a torchvision/timm model at a small input take ≤ 60 s and "
                    "≤ 2 GB (filters to −10 % MACs, MLP neurons 20 %, heads one in three)?",
        "method": "one fresh process per model and cut (python -c, see child_script); random init; L1 scores; "
                  "seconds = plan + cut (scoring apart); peak_mb = the child's VmHWM after the cut, including "
                  "baseline_mb (RSS after importing torch and neurotomy) and the model; a child past --timeout or "
                  "--memory-limit-mb is killed and recorded as a miss",
        "targets": {"seconds": TARGET_SECONDS, "peak_mb": TARGET_PEAK_MB},
        "settings": {"models": [f"{s}@{n}" for s, n in args.models], "cuts": args.cuts, "threads": args.threads,
                     "seed": args.seed, "timeout_s": args.timeout, "memory_limit_mb": args.memory_limit_mb},
        "records": [],
        "skipped": [],
    }
    with tempfile.TemporaryDirectory(prefix="transformer-scale-") as work:
        for spec, size in args.models:
            loaded = None  # the first child's "loaded" event: what the model has
            for cut in args.cuts:
                if applicable(cut, loaded):
                    stamp = begin_stamp()
                    run = run_child(spec, size, cut, threads=args.threads, seed=args.seed, timeout=args.timeout,
                                    memory_limit_mb=args.memory_limit_mb, workdir=Path(work))
                    loaded = next((e for e in run["events"] if e.get("event") == "loaded"), loaded)
                if not applicable(cut, loaded):  # known before, or this child was the first to look
                    results["skipped"].append(skipped_line(spec, size, cut, loaded))
                    if not args.quiet:
                        print(results["skipped"][-1], flush=True)
                    continue
                record = {**make_record(spec, size, cut, run), **end_stamp(stamp)}
                results["records"].append(record)
                if not args.quiet:
                    print(summary_line(record), flush=True)
    records = results["records"]
    results["summary"] = {"cuts": len(records), "ok": sum(r["ok"] for r in records),
                          "met": sum(r["met"] for r in records),
                          "max_seconds": max((r["seconds"] for r in records if r["ok"]), default=None),
                          "max_peak_mb": max((r["peak_mb"] for r in records if r["ok"]), default=None),
                          "all_met": bool(records) and all(r["met"] for r in records)}
    json_path = write_json(out / "transformer_scale.json", results)
    plot(results, out / "transformer_scale.png")
    s = results["summary"]
    print(f"{s['met']}/{s['cuts']} cuts within ≤ {TARGET_SECONDS:g} s and ≤ {TARGET_PEAK_MB:g} MB ({s['ok']} ran); "
          f"wrote {json_path} and {out / 'transformer_scale.png'}")
    return results


if __name__ == "__main__":
    try:
        main()
    except NeurotomyError as exc:  # bad input: one line, no traceback
        print(f"transformer_scale.py: {exc}", file=sys.stderr)
        sys.exit(2)
