"""Resumable runs (neurotomy.run_state.RunState): a `train` killed with SIGKILL after epoch 2 and resumed
ends with the weights of an uninterrupted run; Ctrl-C says how to resume; a state file that is
missing, damaged or written with other settings is one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from neurotomy.cli import main
from neurotomy.data import load_dataset
from neurotomy.errors import PruningError, ResumeError, WorseResultError
from neurotomy.models import build_model
from neurotomy.run_state import PAUSE_ENV, STATE_SUFFIX, Interrupted, RunState
from neurotomy.train import TrainConfig, fit, seed_everything

TRAIN = ["train", "lenet5", "--data", "digits", "--epochs", "4", "--batch-size", "32", "--quiet"]


def _state_epoch(path: Path) -> int | None:
    """The epoch a state file has reached (None while there is none or it cannot be read yet)."""
    try:
        with safe_open(str(path), "pt") as f:
            return json.loads(f.metadata()["neurotomy_state"])["fits"]["fit"]["epoch"]
    except Exception:
        return None


def _max_difference(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].numel())


def _metrics(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["neurotomy"])["metrics"]


def test_train_killed_after_epoch_2_and_resumed_ends_with_the_same_weights(tmp_path, capsys, one_thread):
    out = tmp_path / "lenet.safetensors"
    state = tmp_path / ("lenet.safetensors" + STATE_SUFFIX)
    # the run sleeps after saving epoch 2, where the test kills it
    env = {**os.environ, PAUSE_ENV: "2", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "neurotomy.cli", *TRAIN, "--out", str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while _state_epoch(state) != 2:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "no state after epoch 2"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL and not out.exists()

    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0
    assert not state.exists()  # removed on success
    reference = tmp_path / "uninterrupted.safetensors"
    assert main([*TRAIN, "--out", str(reference)]) == 0
    difference = _max_difference(out, reference)
    record = {"resume_max_weight_diff": difference, "command": " ".join(TRAIN), "killed_after_epoch": 2}
    (tmp_path / "resume.json").write_text(json.dumps(record))
    if os.environ.get("NEUROTOMY_RESUME_RESULT"):  # benchmarks/robustness.json takes the number from here
        Path(os.environ["NEUROTOMY_RESUME_RESULT"]).write_text(json.dumps(record))
    assert difference <= 1e-6
    resumed, uninterrupted = _metrics(out), _metrics(reference)
    assert resumed["test"] == uninterrupted["test"] and resumed["train_history"] == uninterrupted["train_history"]


def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch, one_thread):
    def interrupt(seconds):  # the pause after epoch 1 is where Ctrl-C lands
        raise KeyboardInterrupt

    monkeypatch.setenv(PAUSE_ENV, "1")
    monkeypatch.setattr("neurotomy.run_state.time.sleep", interrupt)
    out = tmp_path / "lenet.safetensors"
    assert main([*TRAIN, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "after epoch 1 of 4" in err and "--resume" in err and str(out) + STATE_SUFFIX in err
    assert not out.exists() and Path(str(out) + STATE_SUFFIX).exists()


def test_resume_without_state_or_with_other_settings_is_one_line(tmp_path, capsys):
    out = tmp_path / "lenet.safetensors"
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no state file" in err and not out.exists()

    state = RunState.beside(out)
    state.expect({"job": "train", "lr": 0.1})
    state.save_stage("first", {"x": torch.ones(2)})
    with pytest.raises(ResumeError, match="lr=0.1, this run has lr=0.05"):
        RunState.beside(out, resume=True).expect({"job": "train", "lr": 0.05})

    Path(str(out) + STATE_SUFFIX).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")  # damaged
    with pytest.raises(ResumeError, match="cannot read the state file"):
        RunState.beside(out, resume=True)


def test_fit_resumes_mid_schedule_exactly_and_keeps_stages(tmp_path, one_thread):
    """In process: an error after epoch 2 of 3 keeps the state; resuming matches an uninterrupted fit
    (optimizer momentum, one-cycle position, data order and RNG all come back); a stage's result and
    the random state after it come back too."""
    data, config = load_dataset("digits"), TrainConfig(epochs=3, batch_size=64, quiet=True)
    seed_everything(0)
    reference = build_model("lenet5", 1, 10, 8)
    expected = fit(reference, data, config)

    def fail_in_epoch_3(model, epoch):
        if epoch == 2:
            raise RuntimeError("crash")

    out = tmp_path / "m"
    with pytest.raises(RuntimeError), RunState.beside(out) as state:
        state.save_stage("before", {"n": 3, "t": torch.arange(3)})
        after_stage = torch.rand(1)
        seed_everything(0)
        fit(build_model("lenet5", 1, 10, 8), data, config, state=state, on_epoch_end=fail_in_epoch_3)
    assert state.path.exists()  # kept for --resume
    with RunState.beside(out, resume=True) as state:
        saved = state.load_stage("before")
        assert saved["n"] == 3 and saved["t"].tolist() == [0, 1, 2]
        assert torch.equal(torch.rand(1), after_stage)  # the random state the stage left
        seed_everything(0)
        model = build_model("lenet5", 1, 10, 8)
        assert fit(model, data, config, state=state) == expected
    assert not state.path.exists()
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_interrupted_is_a_keyboard_interrupt_with_the_way_back(tmp_path):
    with pytest.raises(Interrupted, match="nothing was saved"), RunState.beside(tmp_path / "x"):
        raise KeyboardInterrupt


@pytest.mark.parametrize("command, out_name", [
    (["finetune", "zoo:lenet5-digits", "--epochs", "2"], "tuned.safetensors"),
    (["prune", "zoo:lenet5-digits", "--target-macs", "0.3", "--finetune-epochs", "2", "--no-latency", "--force"],
     "pruned.safetensors"),
    (["split", "zoo:lenet5-digits", "--classes", "3,5", "--max-images", "500", "--finetune-epochs", "2"], "modules"),
])
def test_long_commands_interrupted_after_epoch_1_resume_to_the_same_weights(command, out_name, tmp_path, capsys,
                                                                            monkeypatch, one_thread):
    def interrupt(seconds):
        raise KeyboardInterrupt

    out, reference = tmp_path / "resumed" / out_name, tmp_path / "uninterrupted" / out_name
    assert main([*command, "--out", str(reference), "--quiet"]) == 0
    monkeypatch.setenv(PAUSE_ENV, "1")
    monkeypatch.setattr("neurotomy.run_state.time.sleep", interrupt)
    assert main([*command, "--out", str(out), "--quiet"]) == 130
    assert "--resume" in capsys.readouterr().err
    monkeypatch.delenv(PAUSE_ENV)
    assert main([*command, "--out", str(out), "--quiet", "--resume"]) == 0
    assert not Path(str(out) + STATE_SUFFIX).exists()
    if reference.is_dir():
        pairs = [(out / f.name, f) for f in sorted(reference.glob("*.safetensors"))]
    else:
        pairs = [(out, reference)]
    assert pairs
    for resumed, uninterrupted in pairs:
        assert _max_difference(resumed, uninterrupted) == 0


@pytest.mark.parametrize("error, kept", [(PruningError("target out of reach"), False),
                                         (WorseResultError("worse; --force keeps it"), True),
                                         (RuntimeError("crash"), True)])
def test_a_user_error_removes_the_state_this_run_wrote(tmp_path, error, kept):
    """A user error would meet the same settings again: nothing to resume (but --force --resume can go on
    past a refused worse result, and a crash may not recur)."""
    with pytest.raises(type(error)), RunState.beside(tmp_path / "m") as state:
        state.save_stage("scores", {"t": torch.ones(2)})
        raise error
    assert state.path.exists() == kept


def test_a_user_error_keeps_a_state_file_this_run_did_not_write(tmp_path):
    older = RunState.beside(tmp_path / "m")  # an earlier interrupted run's file
    older.save_stage("scores", {"t": torch.ones(2)})
    for resume in (False, True):  # a new run that fails before writing; a resumed run that fails
        with pytest.raises(PruningError), RunState.beside(tmp_path / "m", resume=resume):
            raise PruningError("x")
        assert older.path.exists()
    with pytest.raises(PruningError), RunState.beside(tmp_path / "m", resume=True) as resumed:
        resumed.save_stage("more", {"t": torch.ones(1)})
        raise PruningError("x")
    assert older.path.exists()  # a resumed run's file holds the user's earlier work


def test_prune_with_an_unreachable_target_leaves_no_state_file(tmp_path, capsys):
    out = tmp_path / "p.safetensors"
    assert main(["prune", "zoo:lenet5-digits", "--target-macs", "0.999", "--no-latency", "--out", str(out),
                 "--quiet"]) == 2
    assert "cannot be reached" in capsys.readouterr().err
    assert not out.exists() and not Path(str(out) + STATE_SUFFIX).exists()
