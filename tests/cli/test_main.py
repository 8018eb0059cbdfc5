"""The entry point (`neurotomy.cli.main`, `python -m neurotomy.cli`): one-line user errors with status 2,
and commands unchanged under `accelerate launch` with two CPU processes (gloo)."""

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurotomy.cli import main, one_line
from neurotomy.errors import ModelError
from neurotomy.loading import load_checkpoint, load_model

ACCELERATE = Path(sys.executable).with_name("accelerate")
# Trained, with BatchNorm everywhere. (A fresh random ResNet amplifies any float difference: a 1e-7
# nudge of its weights moves them by 1e-3 within three steps, so it cannot show 2 == 1 process.)
MODEL = "zoo:resnet20-fmnist"
# 301 images, batch 128: steps of 128, 128, 45 images, split 64/64, 64/64, 23/22 between processes.
ARGS = ["--epochs", "1", "--lr", "0.01", "--seed", "4", "--data", "fashion-mnist"]


@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "missing.safetensors"], "no such checkpoint"),
    (["evaluate", "zoo:nothing"], "no zoo model"),
    (["info", "resnet21"], "is not a model"),
    (["evaluate", "zoo:lenet5-digits", "--data", "imagenet-42"], "unknown dataset"),
    (["evaluate", "zoo:lenet5-digits", "--data", "fashion-mnist", "--root", "/nonexistent"], "no such directory"),
])
def test_user_errors_one_line_nonzero(argv, needle, capsys):
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("neurotomy: error:")


def test_one_line_drops_terminal_formatting():
    assert one_line(ModelError("a \x1b[1mbold\x1b[0m\n\tword")) == "a bold word"


def test_pickle_refused_via_subprocess(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    proc = subprocess.run([sys.executable, "-m", "neurotomy.cli", "evaluate", str(path), "--quiet"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "pickle" in proc.stderr


@pytest.fixture
def small_fmnist(tmp_path) -> Path:
    """301 training and 200 test images of the shipped subset, as IDX files (evaluation stays quick)."""
    from neurotomy.data.fashion_mnist import shipped_root
    from neurotomy.data.idx import read_idx, write_idx

    root = tmp_path / "fmnist"
    root.mkdir()
    for prefix, n in (("train", 301), ("t10k", 200)):
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{kind}-ubyte.gz"
            write_idx(root / name, read_idx(shipped_root() / name)[:n])
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
         "-m", "neurotomy.cli", *command],
        check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")
def test_finetune_under_accelerate_launch_writes_one_checkpoint_matching_one_process(small_fmnist, tmp_path, capsys):
    out_dir = tmp_path / "two"
    out_dir.mkdir()
    two = _launch("finetune", MODEL, *ARGS, "--root", str(small_fmnist), "--out", str(out_dir / "ft.safetensors"))
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote") == 1  # only the main process saves and reports
    assert two.stderr.count("fine-tune") == 1  # only the main process draws progress
    assert sorted(p.name for p in out_dir.iterdir()) == ["ft.safetensors"]  # no stray temporary files

    assert main(["finetune", MODEL, *ARGS, "--root", str(small_fmnist), "--quiet",
                 "--out", str(tmp_path / "one.safetensors")]) == 0
    assert capsys.readouterr().out.count("wrote") == 1
    one = load_checkpoint(tmp_path / "one.safetensors").state_dict()
    distributed = load_checkpoint(out_dir / "ft.safetensors").state_dict()
    start = load_model(MODEL).state_dict()
    moved = max(float((one[k] - start[k]).abs().max()) for k in one if one[k].is_floating_point())
    differ = max(float((one[k] - distributed[k]).abs().max()) for k in one if one[k].is_floating_point())
    assert moved > 1e-3  # fine-tuning changed the weights ...
    assert differ < 1e-4  # ... and two processes changed them as one does
    assert torch.equal(one["bn1.num_batches_tracked"], distributed["bn1.num_batches_tracked"])


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")
def test_score_under_accelerate_launch_equals_one_process_and_both_processes_exit_cleanly(tmp_path, capsys):
    from neurotomy.scores import UnitScores

    # 300 digits in batches of 64: 5 batches, 3 for the main process and 2 for the other
    args = ["score", "zoo:lenet5-digits", "--criterion", "hrank", "--max-images", "300", "--batch-size", "64"]
    two = _launch(*args, "--out", str(tmp_path / "two.npz"))
    assert two.returncode == 0, two.stderr[-2000:]  # the non-main process, done early, waits and exits 0
    assert two.stdout.count("wrote") == 1
    assert main([*args, "--quiet", "--out", str(tmp_path / "one.npz")]) == 0
    one, distributed = UnitScores.load(tmp_path / "one.npz"), UnitScores.load(tmp_path / "two.npz")
    assert list(one.keys()) == list(distributed.keys())
    for layer in one:
        assert torch.equal(one[layer], distributed[layer]), layer  # mean integer ranks: exact
