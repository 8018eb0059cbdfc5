"""How robust is the command line? The checks of issue #14, as numbers.

Re-runs the fuzz test of the whole CLI (``tests/cli/test_fuzz.py``: every option of every
subcommand given values that are invalid by construction) and counts the generated cases per
command and what they ended in; runs the corrupt-file tests (checkpoints and scores files) and
counts them; takes the resume check's largest weight difference from ``tests/test_resume.py``
(train killed with SIGKILL after epoch 2, resumed, compared with an uninterrupted run). The
failures found and fixed while building these checks are listed by class, one example each.

Usage: python benchmarks/robustness.py [--examples N] [--random] [--skip-resume]   (make bench-robustness)
Writes benchmarks/results/robustness.json with the run's provenance stamp (git commit, date, load).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from neurotomy.files import write_json  # noqa: E402
from neurotomy.provenance import run_stamp  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "robustness.json"
CORRUPT_TESTS = {"checkpoint": "tests/test_corrupt_files.py", "scores_file": "tests/scores/test_unit_scores_files.py"}

# What the fuzz test, the corrupt-file tests and a first hand trial found before the fixes of issue
# #14 (each reproduced on the commit before them), by class; every example now ends in one line and
# exit status 2 (or, for the API, one NeurotomyError) before any work.
FOUND_AND_FIXED = {
    "traceback": {
        "what": "a Python traceback instead of a one-line error",
        "examples": [
            "evaluate zoo:lenet5-digits --batch-size 0 → ZeroDivisionError",
            "evaluate --max-images -1 → RuntimeError (upper bound and lower bound inconsistent)",
            "explain --n 0 → RuntimeError (cannot reshape tensor of 0 elements)",
            "train --lr -1 → ValueError from the optimizer",
            "info lenet5 --input-size 1 → RuntimeError (output size is too small)",
            "info lenet5 --in-channels 0 → RuntimeError",
            "score --out DIR (an existing directory) → IsADirectoryError after scoring",
            "checkpoint whose header nests 200 000 brackets → RecursionError",
            "checkpoint whose neurotomy metadata is not JSON / a list / has a string format_version → "
            "JSONDecodeError / AttributeError / TypeError",
            "scores .npz whose header is a list, or nests too deeply → TypeError / RecursionError",
        ],
        "fixed_by": "typed, range-checked argparse types from neurotomy.validate on every option; main() turns "
                    "every NeurotomyError (and OSError) into one line; header and metadata checked field by field",
    },
    "wrong_exit_status": {
        "what": "an invalid request accepted: exit status 0",
        "examples": [
            "train --epochs 0 → exit 0 with an untrained model written",
            "finetune --epochs 0 → exit 0, the unchanged model written as fine-tuned",
            "evaluate --root /nonexistent (digits) → exit 0, --root silently ignored",
            "score --criterion random --data no-such-dataset → exit 0, --data silently ignored",
            "prune --min-channels 0 / --round-to 0 / --steps 0 / --recalibrate-images -5 → exit 0",
            "inspect --per-class 0, --k 0; subsets --head-k 0; info --num-classes 0; evaluate --seed -1 → exit 0",
            "finetune --out DIR (an existing directory) → exit 0, DIR.safetensors written beside it",
        ],
        "fixed_by": "validators at the door (positive/non-negative integers, seeds, existing directories, "
                    "dataset specs checked without reading data, output files that are not directories)",
    },
    "half_written_or_late_output_failure": {
        "what": "work done (or a file written) before an error that could have been seen at the start",
        "examples": [
            "prune --out under an existing file → FileExistsError after the whole prune had run",
            "explain / export / inspect with --out under a file → FileExistsError after the work",
            "export --compare NOT-A-MODEL → the ONNX file written, then the error",
            "prune --ignore NO-SUCH-LAYER → error after evaluating and scoring, leaving a .resume state file",
        ],
        "fixed_by": "output paths checked at parse time (parent creatable, nothing in the way, writable) and in "
                    "the API (dissect, split_job, export_onnx, UnitScores.save); --compare loaded before "
                    "export; PruneJob checks every setting and the ignored layers before any work",
    },
    "more_than_one_line": {
        "what": "an error buried in many lines of stderr",
        "examples": [
            "any argparse error (split --search genetic) → the 11-line usage block before the message",
            "export --opset 0 → torch's TorchScript IR graph (~30 lines) printed before the error",
        ],
        "fixed_by": "OneLineParser (one line, `see neurotomy CMD --help`); --opset checked against 7–20",
    },
    "silent_nonsense": {
        "what": "a run that succeeds and means nothing",
        "examples": [
            "train --lr nan → a model trained with NaN weights, exit 0",
            "split --tolerance nan → modules searched against a NaN tolerance, exit 0",
            "prune --ratio 0.3 --min-channels 100000 → a 'pruned' checkpoint with nothing removed, exit 0",
            "recalibrate_batchnorm(model, data, images=0) → every BatchNorm reset to mean 0, var 1",
            "prune_filters with a scores file of another model → its layers silently ignored",
            "checkpoint whose table says I32 for float weights → loaded with a silent conversion",
        ],
        "fixed_by": "finite, range-checked floats; a prune that removes no channel is refused; "
                    "UnitScores.check_fits(model) (layers, widths, finite); dtype kind compared with the model",
    },
    "allocation_from_a_number_in_the_file": {
        "what": "memory allocated from a size the file claims before checking it against the file",
        "examples": [
            "scores .npz whose array header claims 10¹² floats → numpy tries to allocate 7.3 TiB (MemoryError)",
            "checkpoint header length of up to 100 MB on a 100-byte file → a 100 MB read buffer",
            "checkpoint metadata claiming in_channels 2²⁰ → the architecture built for real before the "
            "weights were found not to fit",
        ],
        "fixed_by": "header length checked against the file size; the safetensors tensor table checked against "
                    "the data region (dtype, shape × itemsize = span, contiguous, inside the file); the "
                    "architecture built on the meta device and compared with the table before the real build; "
                    "every .npy member's declared shape checked against its size in the archive",
    },
}


def run_pytest(args: list[str], env: dict[str, str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q", *args],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout + proc.stderr, round(time.perf_counter() - start, 1)


def fuzz(examples: int | None, random: bool) -> dict:
    """The fuzz test's cases, counted per command from its JSON-lines log."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "fuzz.jsonl"
        env = {"NEUROTOMY_FUZZ_LOG": str(log)}
        if examples:
            env["NEUROTOMY_FUZZ_EXAMPLES"] = str(examples)
        if random:
            env["NEUROTOMY_FUZZ_RANDOM"] = "1"
        status, output, seconds = run_pytest(["tests/cli/test_fuzz.py"], env)
        cases = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    per_command: dict[str, dict] = {}
    failures = []
    for case in cases:
        ok = case["status"] == 2 and not case["traceback"] and 1 <= case["stderr_lines"] <= 3 and not case["changed"]
        entry = per_command.setdefault(case["command"], {"cases": 0, "options": set(), "exit_2_one_line": 0,
                                                         "failures": 0})
        entry["cases"] += 1
        entry["options"].add(case["option"])
        entry["exit_2_one_line"] += ok and case["stderr_lines"] == 1
        if not ok:
            entry["failures"] += 1
            failures.append(case)
    for entry in per_command.values():
        entry["options"] = len(entry["options"])
    lines = collections.Counter(case["stderr_lines"] for case in cases)
    return {"cases": len(cases), "commands": dict(sorted(per_command.items())), "failures": failures[:20],
            "failure_count": len(failures), "stderr_lines": {str(k): v for k, v in sorted(lines.items())},
            "pytest_exit_status": status, "seconds": seconds, "examples_setting": examples or "test default",
            "derandomized": not random, "tail": output.strip().splitlines()[-3:]}


def corrupt_files() -> dict:
    """How many corrupt checkpoints and scores files the tests try, and whether each gave one line."""
    counts = {}
    for kind, path in CORRUPT_TESTS.items():
        status, output, seconds = run_pytest(["-rN", path], {})
        passed = sum(int(n) for n in re.findall(r"(\d+) passed", output))
        failed = sum(int(n) for n in re.findall(r"(\d+) failed", output))
        counts[kind] = {"tests": passed + failed, "passed": passed, "failed": failed, "seconds": seconds,
                        "file": path}
    return counts


def resume_difference() -> dict:
    """The resume check of tests/test_resume.py (it writes its record where NEUROTOMY_RESUME_RESULT says)."""
    test = ROOT / "tests" / "test_resume.py"
    if not test.exists():
        return {"resume_max_weight_diff": None, "note": "tests/test_resume.py not found"}
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "resume.json"
        status, output, seconds = run_pytest([str(test), "-k", "killed_after_epoch_2"],
                                             {"NEUROTOMY_RESUME_RESULT": str(record)})
        result = json.loads(record.read_text()) if record.exists() else {}
    return {"resume_max_weight_diff": result.get("resume_max_weight_diff"), "resume_check": {
        **{k: v for k, v in result.items() if k != "resume_max_weight_diff"}, "passed": status == 0,
        "seconds": seconds, "test": "tests/test_resume.py::test_train_killed_after_epoch_2_and_resumed_ends_with_the_same_weights"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=None,
                        help="fuzz cases per command and per 4 options (default: the test's own, as in make test)")
    parser.add_argument("--random", action="store_true", help="new random cases instead of the test's fixed ones")
    parser.add_argument("--skip-resume", action="store_true", help="leave resume_max_weight_diff as it was")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    with run_stamp() as stamp:
        fuzzed = fuzz(args.examples, args.random)
        corrupt = corrupt_files()
        resume = ({k: previous.get(k) for k in ("resume_max_weight_diff", "resume_check")} if args.skip_resume
                  else resume_difference())
    results = {
        "question": "does every invalid input end in one line and exit status 2, before any work, "
                    "and does a killed run resume to the same weights?",
        "fuzz_cases": fuzzed["cases"],
        "fuzz_cases_per_command": {name: entry["cases"] for name, entry in fuzzed["commands"].items()},
        "fuzz": fuzzed,
        "corrupt_files": corrupt,
        "found_and_fixed": FOUND_AND_FIXED,
        "found_and_fixed_counts": {k: len(v["examples"]) for k, v in FOUND_AND_FIXED.items()},
        **resume,
        **stamp,
    }
    write_json(args.out, results)
    print(f"{fuzzed['cases']} fuzz cases over {len(fuzzed['commands'])} commands, {fuzzed['failure_count']} failing; "
          f"corrupt files: {sum(c['passed'] for c in corrupt.values())} tests passed, "
          f"{sum(c['failed'] for c in corrupt.values())} failed; resume max weight difference "
          f"{resume.get('resume_max_weight_diff')} — wrote {args.out}")


if __name__ == "__main__":
    main()
