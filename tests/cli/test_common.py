"""The shared options and helpers (neurotomy.cli.common)."""

import argparse
import json

import pytest

from neurotomy.cli.common import add_data, data_for, print_json
from neurotomy.errors import DataError


def test_workers_must_be_a_count(capsys):
    p = argparse.ArgumentParser()
    add_data(p)
    assert p.parse_args(["--workers", "3"]).workers == 3
    with pytest.raises(SystemExit) as exit_:
        p.parse_args(["--workers", "-1"])
    assert exit_.value.code == 2 and "expected an integer ≥ 0" in capsys.readouterr().err


def test_data_for_needs_a_dataset_name():
    args = argparse.Namespace(data=None, root=None)
    with pytest.raises(DataError, match="pass --data NAME"):
        data_for(object(), args, "test")
    assert len(data_for(object(), argparse.Namespace(data="digits", root=None), "test")) > 0


def test_print_json_indents(capsys):
    print_json({"a": [1]})
    assert json.loads(capsys.readouterr().out) == {"a": [1]}



FIXED_SIZE_NET = '''
from torch import nn


def make(in_channels=1, num_classes=10):
    # a flatten into a linear layer sized for 16 px: it runs at 16 px and nowhere else
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 16 * 16, num_classes))
'''


def test_input_size_resizes_the_built_in_datasets_for_a_fresh_model(tmp_path, capsys):
    from neurotomy.cli import main

    (tmp_path / "net.py").write_text(FIXED_SIZE_NET)
    model = f"{tmp_path / 'net.py'}:make"
    assert main(["evaluate", model, "--input-size", "16", "--data", "digits", "--max-images", "32", "--quiet",
                 "--json"]) == 0  # digits are 8×8: resized to the model's 16 px, as train and the API do
    assert json.loads(capsys.readouterr().out)["n"] == 30  # --max-images draws class-balanced: 3 of each digit


def test_a_fresh_model_draws_its_weights_from_seed_and_leaves_the_random_state_alone():
    import torch

    from neurotomy.cli.common import load_model_arg

    def weights(seed: int) -> torch.Tensor:
        model = load_model_arg(argparse.Namespace(model="lenet5", seed=seed, in_channels=1, num_classes=10,
                                                  input_size=8))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = weights(0)
    assert torch.equal(torch.rand(3), expected)  # the command's own draws are as they were
    assert torch.equal(weights(0), first) and not torch.equal(weights(1), first)
