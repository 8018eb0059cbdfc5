"""Scale: does probing stay bounded as the image count grows, what do 2 processes buy, and how do
the original and a pruned ResNet-20 run in onnxruntime?

Three measurements on zoo:resnet20-fmnist and the full Fashion-MNIST (60k training images):

1. ``probe_peak_rss_mb`` — `apoz` scores over 10k and over 60k training images, each in a fresh child
   process doing what ``neurotomy score --criterion apoz --max-images N`` does; the parent reads the
   child's peak RSS from ``os.wait4`` (``ru_maxrss``). The child also reports its RSS once model and
   data are loaded and the peak *during* probing alone (``VmHWM`` reset through
   ``/proc/self/clear_refs`` after loading). Both runs hold the same in-memory 60k split, so the
   comparison isolates the probing pass; the split's own size is reported as ``dataset_mb``.
2. ``throughput`` — images/s of probing (`apoz`, batch 256) and of fine-tuning (batch 128, one
   epoch, SGD + crop/flip) with 1 process (2 threads) and with 2 processes under
   ``accelerate launch`` (1 thread each: both use the machine's 2 cores), and with 1 process on 1
   thread (separates parallelism from two threads contending on a busy machine). Timed inside the
   workers between barriers, without start-up, and printed by the main process.
3. ``onnx_max_abs_diff`` / ``onnx_latency_ms`` — export.py's export (checked in onnxruntime) of
   the original and of an L1 −50 % MACs cut (also with channels rounded to multiples of 8), then
   onnxruntime latency at batch 64 and 1, interleaved.

The machine: 2 CPU cores, no GPU, often shared with other jobs: the 1-minute load average is
recorded at every step, and the run's stamp (commit, date, argv, threads, load at its start and at
its last save) is ``provenance.run``. Results are saved after every step to
benchmarks/results/scale.json (+ scale.png).

Usage: python benchmarks/scale.py --root ../shared/data/fashion-mnist [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SCRIPT = Path(__file__).resolve()
MODEL = "zoo:resnet20-fmnist"


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpu": None,
            "torch": torch.__version__, "load_average_1min": round(os.getloadavg()[0], 2)}


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


# ---------------------------------------------------------------- children

def child_memory(images: int, root: str) -> None:
    """One probing run, as `neurotomy score --criterion apoz --max-images N` does it."""
    from neurotomy.data import load_dataset
    from neurotomy.loading import load_model
    from neurotomy.scores import get_criterion

    torch.set_num_threads(1)  # one core: on a shared machine 2 threads mostly wait for each other
    model = load_model(MODEL)
    before_data = _proc_status_kb("VmRSS")
    data = load_dataset("fashion-mnist", root=root, split="train")
    loaded = _proc_status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the next peak is the probing pass's
    start = time.perf_counter()
    scores = get_criterion("apoz")(model, data, batch_size=256, max_images=images, seed=0, quiet=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"images": images, "dataset_images": len(data), "dataset_mb": (loaded - before_data) / 1024,
                      "rss_after_load_mb": loaded / 1024, "probe_phase_peak_mb": _proc_status_kb("VmHWM") / 1024,
                      "seconds": seconds, "units": sum(v.numel() for v in scores.values())}))


def child_throughput(root: str, probe_images: int, finetune_images: int) -> None:
    """Timed probing and fine-tuning; run alone or under `accelerate launch`."""
    from neurotomy.data import load_dataset
    from neurotomy.distributed import is_main_process, process_count, shutdown, wait_for_everyone
    from neurotomy.loading import load_model
    from neurotomy.recover import finetune
    from neurotomy.scores import get_criterion

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    data = load_dataset("fashion-mnist", root=root, split="train")
    model = load_model(MODEL)
    wait_for_everyone()
    start = time.perf_counter()
    get_criterion("apoz")(model, data, batch_size=256, max_images=probe_images, seed=0, quiet=True)
    wait_for_everyone()
    probe_s = time.perf_counter() - start
    start = time.perf_counter()
    history = finetune(model, data, 1, lr=0.01, batch_size=128, seed=0, quiet=True, max_images=finetune_images)
    wait_for_everyone()
    finetune_s = time.perf_counter() - start
    if is_main_process():
        print(json.dumps({"processes": process_count(), "threads_per_process": torch.get_num_threads(),
                          "probe_images": probe_images, "probe_seconds": probe_s,
                          "probe_images_per_s": probe_images / probe_s,
                          "finetune_images": finetune_images, "finetune_seconds": finetune_s,
                          "finetune_images_per_s": finetune_images / finetune_s,
                          "finetune_loss": history[0]["loss"]}))
    shutdown()


# ---------------------------------------------------------------- parent

def _last_json_line(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def measure_memory(images: int, root: str) -> dict:
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--child-memory", str(images), "--root", root],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"memory child for {images} images failed with status {status}")
    record = _last_json_line(out)
    record["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    record["load_average_1min"] = round(os.getloadavg()[0], 2)
    return record


def measure_throughput(processes: int, root: str, probe_images: int, finetune_images: int,
                       threads: int | None = None) -> dict:
    threads = str(threads or max(1, 2 // processes))
    child = [str(SCRIPT), "--child-throughput", "--root", root, "--probe-images", str(probe_images),
             "--finetune-images", str(finetune_images)]
    if processes == 1:
        cmd = [sys.executable, *child]
    else:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", *child]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": threads})
    if done.returncode != 0:
        raise RuntimeError(f"throughput run with {processes} processes failed:\n{done.stderr[-3000:]}")
    record = _last_json_line(done.stdout)
    record["load_average_1min"] = round(os.getloadavg()[0], 2)
    return record


def measure_onnx() -> dict:
    from neurotomy.export import export_onnx, onnxruntime_latency
    from neurotomy.models.summary import count_macs_params
    from neurotomy.loading import load_model
    from neurotomy.scores import get_criterion
    from neurotomy.surgery.filters import prune_filters

    model = load_model(MODEL)
    shape = model.neurotomy_meta.input_shape
    scores = get_criterion("l1")(model)
    models = {"original": model,
              "pruned": prune_filters(model, scores, target_macs=0.5).model,
              "pruned_round8": prune_filters(model, scores, target_macs=0.5, round_to=8).model}
    with tempfile.TemporaryDirectory() as tmp:
        exported = {name: export_onnx(m, Path(tmp) / f"{name}.onnx") for name, m in models.items()}
        latency = {}
        for batch in (64, 1):
            times = onnxruntime_latency([e["path"] for e in exported.values()], shape, batch_size=batch,
                                        rounds=15, repeats=5 if batch > 1 else 50)
            row = dict(zip(exported, times))
            row["speedup"] = row["original"]["median_ms"] / row["pruned"]["median_ms"]
            row["speedup_round8"] = row["original"]["median_ms"] / row["pruned_round8"]["median_ms"]
            latency[f"batch{batch}"] = row
    return {"onnx_max_abs_diff": {name: e["max_abs_diff"] for name, e in exported.items()},
            "onnx_bytes": {name: e["bytes"] for name, e in exported.items()},
            "onnx_latency_ms": latency,
            "pruned_by": "l1 scores, -50 % MACs, uniform; pruned_round8 also keeps channel counts multiples of 8",
            "macs": {name: count_macs_params(m, shape)[0] for name, m in models.items()},
            "load_average_1min": round(os.getloadavg()[0], 2)}


def plot(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from neurotomy.report.figures import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    mem = result.get("probe_peak_rss_mb", {})
    if mem:
        labels = list(mem)
        x = range(len(labels))
        loaded = {str(r["images"]): r["rss_after_load_mb"] for r in result["probe_memory_runs"]}
        axes[0].bar([i - 0.27 for i in x], [loaded[k] for k in labels], 0.27, label="model + 60k split loaded")
        axes[0].bar([i for i in x], [result["probe_phase_peak_mb"][k] for k in labels], 0.27,
                    label="peak while probing")
        axes[0].bar([i + 0.27 for i in x], [mem[k] for k in labels], 0.27, label="process peak (ru_maxrss)")
        axes[0].set_xticks(list(x), [f"{int(k):,} images" for k in labels])
        axes[0].set_ylabel("MB")
        axes[0].set_title("apoz probing: peak memory", fontsize=9)
        axes[0].legend(fontsize=7, loc="lower right")
    thr = result.get("throughput", {})
    if thr:
        runs = {f"{p} process{'es' if p != '1' else ''}\n({r['threads_per_process']} thread"
                f"{'s' if r['threads_per_process'] > 1 else ''}{' each' if p != '1' else ''})": r
                for p, r in thr.items()}
        if "throughput_one_process_one_thread" in result:
            runs["1 process\n(1 thread)"] = result["throughput_one_process_one_thread"]
        x = range(len(runs))
        axes[1].bar([i - 0.2 for i in x], [r["probe_images_per_s"] for r in runs.values()], 0.4, label="probing")
        axes[1].bar([i + 0.2 for i in x], [r["finetune_images_per_s"] for r in runs.values()], 0.4, label="fine-tuning")
        axes[1].set_xticks(list(x), list(runs), fontsize=7)
        axes[1].set_ylabel("images / s")
        axes[1].set_title("throughput on 2 shared CPU cores", fontsize=9)
        axes[1].legend(fontsize=7)
    lat = result.get("onnx_latency_ms", {})
    if lat:
        batches = list(lat)
        x = range(len(batches))
        for offset, name, label in ((-0.27, "original", "original"), (0, "pruned", "pruned −50 % MACs"),
                                    (0.27, "pruned_round8", "pruned, channels ×8")):
            axes[2].bar([i + offset for i in x], [lat[b][name]["median_ms"] for b in batches], 0.27, label=label)
        axes[2].set_xticks(list(x), batches)
        axes[2].set_yscale("log")
        axes[2].set_ylabel("ms per batch (median)")
        axes[2].set_title("onnxruntime latency", fontsize=9)
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="directory of the full Fashion-MNIST IDX files")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--out", default=str(RESULTS / "scale.json"))
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-throughput", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe-images", type=int, default=4096, help=argparse.SUPPRESS)
    parser.add_argument("--finetune-images", type=int, default=2048, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory is not None:
        return child_memory(args.child_memory, args.root)
    if args.child_throughput:
        return child_throughput(args.root, args.probe_images, args.finetune_images)

    from neurotomy.files import write_json
    from neurotomy.provenance import begin_stamp, end_stamp

    run = begin_stamp()
    out = Path(args.out)
    sizes = (1000, 6000) if args.quick else (10_000, 60_000)
    probe_images, finetune_images = (512, 256) if args.quick else (args.probe_images, args.finetune_images)
    result: dict = {"model": MODEL, "machine": machine(), "quick": args.quick,
                    "scale_note": "reduced scale for a 2-core shared machine: throughput on "
                                  f"{probe_images} probed and {finetune_images} fine-tuned images; "
                                  "memory at the full 10k/60k sizes"}

    def save() -> None:
        result["provenance"] = {"run": end_stamp(run)}
        write_json(out, result)
        plot(result, out.with_suffix(".png"))

    details = result.setdefault("probe_memory_runs", [])
    for n in sizes:
        record = measure_memory(n, args.root)
        details.append(record)
        result.setdefault("probe_peak_rss_mb", {})[str(n)] = round(record["peak_rss_mb"], 1)
        result.setdefault("probe_phase_peak_mb", {})[str(n)] = round(record["probe_phase_peak_mb"], 1)
        print(f"{n} images: peak RSS {record['peak_rss_mb']:.0f} MB, while probing {record['probe_phase_peak_mb']:.0f} MB "
              f"({record['seconds']:.0f}s)", flush=True)
        save()
    small, large = (result["probe_peak_rss_mb"][str(n)] for n in sizes)
    result["probe_peak_rss_growth"] = round(large / small - 1, 4)
    small, large = (result["probe_phase_peak_mb"][str(n)] for n in sizes)
    result["probe_phase_peak_growth"] = round(large / small - 1, 4)
    save()

    for processes in (1, 2):
        record = measure_throughput(processes, args.root, probe_images, finetune_images)
        result.setdefault("throughput", {})[str(processes)] = record
        print(f"{processes} process(es): probing {record['probe_images_per_s']:.0f} img/s, "
              f"fine-tuning {record['finetune_images_per_s']:.0f} img/s", flush=True)
        save()
    # the same single process on one thread: separates parallelism from 2 threads contending
    record = measure_throughput(1, args.root, probe_images, finetune_images, threads=1)
    result["throughput_one_process_one_thread"] = record
    print(f"1 process, 1 thread: probing {record['probe_images_per_s']:.0f} img/s, "
          f"fine-tuning {record['finetune_images_per_s']:.0f} img/s", flush=True)
    one, two = result["throughput"]["1"], result["throughput"]["2"]
    result["throughput_speedup_2_processes"] = {
        "probe": round(two["probe_images_per_s"] / one["probe_images_per_s"], 3),
        "finetune": round(two["finetune_images_per_s"] / one["finetune_images_per_s"], 3),
        "probe_vs_one_thread": round(two["probe_images_per_s"] / record["probe_images_per_s"], 3),
        "finetune_vs_one_thread": round(two["finetune_images_per_s"] / record["finetune_images_per_s"], 3)}
    save()

    result.update(measure_onnx())
    lat = result["onnx_latency_ms"]
    print(f"onnx max abs diff {result['onnx_max_abs_diff']}; batch 64 {lat['batch64']['original']['median_ms']:.1f} → "
          f"{lat['batch64']['pruned']['median_ms']:.1f} ms", flush=True)
    result["machine_at_end"] = machine()
    save()


if __name__ == "__main__":
    main()
