"""`neurotomy finetune` unchanged under `accelerate launch` with two CPU processes (gloo)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurotomy.checkpoint import load_checkpoint
from neurotomy.cli import main
from neurotomy.models.zoo import load_model

ACCELERATE = Path(sys.executable).with_name("accelerate")
# Trained, with BatchNorm everywhere. (A fresh random ResNet amplifies any float difference: a 1e-7
# nudge of its weights moves them by 1e-3 within three steps, so it cannot show 2 == 1 process.)
MODEL = "zoo:resnet20-fmnist"
# 301 images, batch 128: steps of 128, 128, 45 images, split 64/64, 64/64, 23/22 between processes.
ARGS = ["--epochs", "1", "--max-images", "301", "--lr", "0.01", "--seed", "4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")
def test_finetune_under_accelerate_launch_writes_one_checkpoint_matching_one_process(tmp_path, capsys):
    out_dir = tmp_path / "two"
    out_dir.mkdir()
    two = subprocess.run(
        [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
         "-m", "neurotomy.cli", "finetune", MODEL, *ARGS, "--out", str(out_dir / "ft.safetensors")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("wrote") == 1  # only the main process saves and reports
    assert two.stderr.count("fine-tune") == 1  # only the main process draws progress
    assert sorted(p.name for p in out_dir.iterdir()) == ["ft.safetensors"]  # no stray temporary files

    assert main(["finetune", MODEL, *ARGS, "--quiet", "--out", str(tmp_path / "one.safetensors")]) == 0
    assert capsys.readouterr().out.count("wrote") == 1
    one = load_checkpoint(tmp_path / "one.safetensors").state_dict()
    distributed = load_checkpoint(out_dir / "ft.safetensors").state_dict()
    start = load_model(MODEL).state_dict()
    moved = max(float((one[k] - start[k]).abs().max()) for k in one if one[k].is_floating_point())
    differ = max(float((one[k] - distributed[k]).abs().max()) for k in one if one[k].is_floating_point())
    assert moved > 1e-3  # fine-tuning changed the weights ...
    assert differ < 1e-4  # ... and two processes changed them as one does
    assert torch.equal(one["bn1.num_batches_tracked"], distributed["bn1.num_batches_tracked"])
