"""Fuzz test of the whole CLI: every option of every subcommand, given a value that is invalid by
construction, must end at the door — exit status 2, at most three lines on stderr, no traceback,
nothing written anywhere, input files unchanged.

The commands and their options are read from the parser itself, so a new command or option is
fuzzed without touching this file; what counts as invalid follows from the option's validator
(``neurotomy.cli.common.Checked``), its ``choices``, or, for a free-text option, an unknown name.
The rest of each command line is valid and cheap (tiny model, few images, ``--budget tiny``), so an
invalid value that slipped through would show as a run that succeeds, not as a long one.

``NEUROTOMY_FUZZ_EXAMPLES`` scales the number of cases per command; ``NEUROTOMY_FUZZ_LOG`` names a
JSON-lines file that receives one line per case (``benchmarks/robustness.py`` counts them).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import string
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurotomy.cli import build_parser, main
from neurotomy.cli.common import Checked
from neurotomy.loading.zoo import zoo_path
from neurotomy.validate import INT_MAX, SEED_MAX

MODEL = "zoo:lenet5-digits"
EXAMPLES = int(os.environ.get("NEUROTOMY_FUZZ_EXAMPLES", "12"))  # per command and per 4 options, at least 12
LOG = os.environ.get("NEUROTOMY_FUZZ_LOG")

# Valid, cheap settings added to a command's line (an option fuzzed replaces its own entry).
CHEAP = {
    "train": ["--epochs", "1", "--max-images", "64"],
    "finetune": ["--epochs", "1", "--max-images", "64"],
    "evaluate": ["--max-images", "64"],
    "score": ["--max-images", "64"],
    "prune": ["--ratio", "0.3", "--no-latency", "--max-images", "64", "--recalibrate-images", "64"],
    "inspect": ["--per-class", "2"],
    "explain": ["--n", "2", "--method", "gradient"],
    "rate-explanations": ["--n", "2", "--methods", "gradient", "--metrics", "deletion"],
    "compare-reasons": ["--n", "2", "--methods", "gradient"],
    "subsets": ["--finetune-epochs", "0", "--max-images", "64"],
    "split": ["--classes", "1", "--finetune-epochs", "0", "--max-images", "64"],
    "dissect": ["--budget", "tiny"],
    "demo": ["--budget", "tiny"],
}
# Valid values of required free-text options (no validator to derive one from).
FREE_TEXT_VALID = {"data": "digits"}
VALID = {"dataset_spec": "digits"}

GARBAGE = ["", " ", "abc", "1.5.2", "0x1f", "None", "été", "1e", "+-1", "12abc"]
NOT_A_NUMBER = ["nan", "NaN", "inf", "-inf", "1e400", "-1e400"]


# --------------------------------------------------------------------------------------------------
# the sandbox every case runs in


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """A checkpoint, a class module, a plain file, an empty directory; the working directory."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copy(zoo_path(MODEL[4:]), root / "model.safetensors")
    (root / "a-file.txt").write_text("not a model\n")
    (root / "a-dir").mkdir()
    (root / "work").mkdir()
    status, err = run(["split", MODEL, "--classes", "1", "--finetune-epochs", "0", "--max-images", "200",
                       "--out", str(root / "modules"), "--quiet"])
    if status != 0:  # split is tested elsewhere; here any checkpoint will do as a (wrong) module
        (root / "modules").mkdir(exist_ok=True)
        shutil.copy(root / "model.safetensors", root / "modules" / "class1.safetensors")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (and the zoo file) with a hash of its bytes ('dir' for folders)."""
    files = {str(p.relative_to(root)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
             for p in sorted(root.rglob("*"))}
    files["<zoo>"] = hashlib.sha256(zoo_path(MODEL[4:]).read_bytes()).hexdigest()
    return files


# --------------------------------------------------------------------------------------------------
# what the parser says


def commands() -> dict:
    parser = build_parser()
    return dict(parser._subparsers._group_actions[0].choices)  # argparse keeps its subparsers only here


def options_of(sub) -> list:
    """Every action that takes a value (flags and --help take none)."""
    return [a for a in sub._actions if a.nargs != 0 and a.dest != "help"]


def flag_of(action) -> str | None:
    long = [o for o in action.option_strings if o.startswith("--")]
    return (long or action.option_strings or [None])[0]


def validator_of(action) -> tuple[str, dict]:
    if isinstance(action.type, Checked):
        return action.type.validator.__name__, action.type.options
    if action.choices is not None:
        return "choices", {"choices": list(action.choices)}
    return ("free_text" if action.type is None else "other_type"), {}


def valid_value(action, sandbox: Path) -> str:
    """A valid value for a positional or required option (the rest of a fuzzed command line)."""
    kind, options = validator_of(action)
    if kind == "model_spec":
        return MODEL
    if kind == "module_file":
        return str(sandbox / "modules" / "class1.safetensors")
    if kind == "output_file":
        return str(sandbox / "out" / f"{action.dest}.bin")
    if kind == "output_dir":
        return str(sandbox / "out" / action.dest)
    if kind in ("known_name", "known_names"):
        names = options["names"]() if callable(options["names"]) else options["names"]
        return next(iter(names))
    if kind in VALID:
        return VALID[kind]
    if kind == "free_text" and action.dest in FREE_TEXT_VALID:
        return FREE_TEXT_VALID[action.dest]
    raise AssertionError(f"no valid value known for {action.dest} ({kind}); add one to tests/cli/test_fuzz.py")


def baseline(name: str, sub, sandbox: Path) -> list[tuple[object, list[str]]]:
    """(action, its argv words) of a valid, cheap command line: positionals, required options,
    every output option (so outputs land in the sandbox), then ``CHEAP``."""
    line = []
    for action in options_of(sub):
        kind, _ = validator_of(action)
        if not action.option_strings:
            line.append((action, [valid_value(action, sandbox)]))
        elif action.required or kind in ("output_file", "output_dir"):
            line.append((action, [f"{flag_of(action)}={valid_value(action, sandbox)}"]))
    words = CHEAP.get(name, [])
    by_flag = {o: a for a in sub._actions for o in a.option_strings}
    i = 0
    while i < len(words):
        action = by_flag[words[i]]
        if action.nargs == 0:
            line.append((action, [words[i]]))
            i += 1
        else:
            line.append((action, [f"{words[i]}={words[i + 1]}"]))
            i += 2
    return line


# --------------------------------------------------------------------------------------------------
# invalid values, by validator


def _text(n: st.SearchStrategy) -> st.SearchStrategy[str]:
    return n.map(str)


def _non_integers() -> st.SearchStrategy[str]:
    floats = st.floats(allow_nan=False, allow_infinity=False, width=32).filter(lambda x: not float(x).is_integer())
    return st.one_of(_text(floats), st.sampled_from(GARBAGE + NOT_A_NUMBER))


def _integers_outside(low: int, high: int) -> st.SearchStrategy[str]:
    below = st.integers(max_value=low - 1, min_value=low - 10**20)
    above = st.integers(min_value=high + 1, max_value=high + 10**25)
    return st.one_of(_text(below), _text(above), _non_integers())


def _floats_outside(low: float, high: float, low_open: bool, high_open: bool) -> st.SearchStrategy[str]:
    below = st.floats(max_value=low, exclude_max=not low_open, allow_nan=False, allow_infinity=False)
    outs = [_text(below), st.sampled_from(GARBAGE + NOT_A_NUMBER)]
    if high < math.inf:
        outs.append(_text(st.floats(min_value=high, exclude_min=not high_open, allow_nan=False, allow_infinity=False)))
    return st.one_of(*outs)


def _unknown_names() -> st.SearchStrategy[str]:
    return st.text(string.ascii_lowercase + "-_", min_size=1, max_size=10).map(lambda s: "zz" + s)


def invalid_values(action, sandbox: Path) -> st.SearchStrategy[str]:
    kind, o = validator_of(action)
    missing = str(sandbox / "missing" / "nothing.safetensors")
    under_file = str(sandbox / "a-file.txt" / "x")
    paths = {
        "existing_dir": [missing, str(sandbox / "a-file.txt"), ""],
        "existing_file": [missing, str(sandbox / "a-dir"), ""],
        "output_file": [str(sandbox / "a-dir"), under_file, str(sandbox / "a-file.txt" / "x" / "y"), "",
                        str(sandbox / "out" / ("n" * 300))],
        "output_dir": [str(sandbox / "a-file.txt"), under_file, "", str(sandbox / "out" / ("n" * 300))],
        "model_spec": [missing, str(sandbox / "a-dir"), "zoo:zz-no-such-model", "", "zz-no-such-architecture",
                       str(sandbox / "a-file.txt")],
        "module_file": [missing, str(sandbox / "a-dir"), str(sandbox / "a-file.txt"), ""],
        "dataset_spec": ["", "zz-no-such-data", "digits:extra", "idx:", f"idx:{missing}",
                         f"image-folder:{sandbox / 'a-file.txt'}", "torchvision:"],
        # invalid on any machine ("cuda" is invalid only without CUDA: tests/test_device.py)
        "device_spec": ["", "gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:999", "cpu:0", "tpu", "auto:1"],
    }
    if kind in paths:
        return st.sampled_from(paths[kind])
    if kind == "positive_int":
        return _integers_outside(1, o.get("maximum", INT_MAX))
    if kind == "non_negative_int":
        return _integers_outside(0, o.get("maximum", INT_MAX))
    if kind == "int_between":
        return _integers_outside(o["low"], o["high"])
    if kind == "seed":
        return _integers_outside(0, SEED_MAX)
    if kind == "fraction":
        interval = o.get("interval", "[0, 1)")
        return _floats_outside(0.0, 1.0, interval[0] == "(", interval[-1] == ")")
    if kind == "positive_float":
        return _floats_outside(0.0, o.get("maximum", math.inf), True, False)
    if kind == "non_negative_float":
        return _floats_outside(0.0, o.get("maximum", math.inf), False, False)
    if kind in ("known_name", "known_names", "choices"):
        return st.one_of(_unknown_names(), st.just(""))
    if kind == "identifier":  # bad syntax, or a layer the model lacks
        return st.sampled_from(["", " ", "a b", "\t", "zz-no-such-layer"])
    if kind == "class_selection":
        return st.sampled_from(["", "-1", "a", "1,,x", "1.5", "99", "all,1", "0x1"])
    if kind == "budget":
        return st.sampled_from(["", "0", "-1", "nan", "inf", "1e400", "zz", "soon"])
    if kind == "free_text":
        return _unknown_names()
    if kind in ("other_type", "parse_class_names"):  # comma lists of names: an empty name
        return st.sampled_from([",", "a,,b", " , "])
    raise AssertionError(f"no invalid values known for validator {kind!r} of {action.dest}; "
                         "teach tests/cli/test_fuzz.py what is invalid for it")


# --------------------------------------------------------------------------------------------------
# one case


def run(argv: list[str]) -> tuple[object, str]:
    """``main(argv)`` in this process: (exit status, stderr); an escaping exception is status None."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
        except BaseException:  # noqa: BLE001 - whatever escapes is the failure this test looks for
            status = None
            traceback.print_exc(file=err)
    return status, err.getvalue()


def fuzz_line(name: str, sub, sandbox: Path, action, value: str) -> list[str]:
    """The valid baseline with ``action`` given ``value`` (options as ``--flag=value``, so a value
    starting with "-" is not read as an option)."""
    options, positionals = [], []
    for a, words in baseline(name, sub, sandbox):
        if not a.option_strings:
            positionals.append(value if a is action else words[0])
        elif a is not action:
            options += words
    if action.option_strings:
        options.append(f"{flag_of(action)}={value}")
    return [name, *options, "--quiet", *positionals]


COMMANDS = sorted(commands())


@pytest.mark.parametrize("name", COMMANDS)
def test_every_invalid_value_fails_at_the_door(name, sandbox, monkeypatch):
    sub = commands()[name]
    actions = options_of(sub)
    if not actions:
        pytest.skip(f"{name} takes no values")
    monkeypatch.chdir(sandbox / "work")  # relative default outputs (demo's demo-out) land in the sandbox
    before = snapshot(sandbox)
    examples = max(12, EXAMPLES * math.ceil(len(actions) / 4))

    @settings(max_examples=examples, deadline=None, database=None, derandomize=not os.environ.get("NEUROTOMY_FUZZ_RANDOM"),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(data=st.data())
    def case(data):
        action = data.draw(st.sampled_from(actions), label="option")
        value = data.draw(invalid_values(action, sandbox), label="value")
        if not action.option_strings and value.startswith("-"):
            value = "./" + value  # a positional starting with "-" would read as an option
        argv = fuzz_line(name, sub, sandbox, action, value)
        status, err = run(argv)
        lines = err.strip().splitlines()
        after = snapshot(sandbox)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        if LOG:
            with open(LOG, "a") as fh:
                fh.write(json.dumps({"command": name, "option": flag_of(action) or action.dest, "value": value,
                                     "status": status, "stderr_lines": len(lines),
                                     "traceback": "Traceback" in err, "changed": changed}) + "\n")
        for path in changed:  # leave the sandbox as it was for the next case, whatever happened
            target = sandbox / path
            if path in before or not target.exists():
                continue
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        assert "Traceback" not in err, f"{argv}: traceback\n{err}"
        assert status == 2, f"{argv}: exit status {status}, expected 2\n{err}"
        assert 1 <= len(lines) <= 3, f"{argv}: {len(lines)} lines on stderr\n{err}"
        assert lines[-1].startswith("neurotomy: error:"), f"{argv}: last line is not the error\n{err}"
        assert not changed, f"{argv}: files created or changed: {changed}"

    case()


# --------------------------------------------------------------------------------------------------
# the examples of issue #14, by name


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", MODEL, "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["explain", MODEL, "--n", "0", "--out", "{tmp}/maps.png"], "argument --n: expected a positive integer"),
    (["train", "lenet5", "--data", "digits", "--lr", "-0.1", "--out", "{tmp}/m"], "argument --lr: expected a finite"),
    (["finetune", MODEL, "--lr", "nan", "--out", "{tmp}/m"], "argument --lr: expected a finite"),
    (["prune", MODEL, "--ratio", "0.5", "--out", "{tmp}/a-file/pruned"], "is a file, not a directory"),
    (["train", "lenet5", "--data", "digits", "--epochs", "0", "--out", "{tmp}/m"], "argument --epochs"),
])
def test_the_issues_examples_fail_at_the_door(argv, needle, tmp_path):
    (tmp_path / "a-file").write_text("x")
    status, err = run([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--quiet"])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("neurotomy: error:") and needle in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
