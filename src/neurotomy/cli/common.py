"""What the command groups share: the common options, the data options, the dataset of a model,
and JSON output.

Each group module (``models``, ``prune``, ``explain``, ``classes``, ``report``) declares its parsers in
``add_parsers(subparsers)`` next to the handlers they call. Parsers take their ``choices`` from the
library; a handler imports the job or API it calls when it runs, so ``neurotomy --help`` and each
command load only what they use (Captum, matplotlib, onnx stay unloaded until needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neurotomy import validate
from neurotomy.data import dataset_specs
from neurotomy.device import device_spec, place
from neurotomy.data.sources import parse_class_names
from neurotomy.distributed import is_main_process
from neurotomy.errors import NeurotomyError
from neurotomy.models.data_fit import fitted_dataset


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``neurotomy: error: …``, exit status 2 (the usage
    block argparse prints first would bury the one line that matters)."""

    def error(self, message: str):
        hint = "" if "(see `" in message else f" (see `{self.prog} --help`)"
        self.exit(2, f"neurotomy: error: {message}{hint}\n")


class Checked:
    """An argparse ``type=`` made of a :mod:`neurotomy.validate` validator: the text is parsed and
    range-checked at the door; a bad value is argparse's one-line error. Paths come back as given."""

    def __init__(self, validator, **options) -> None:
        self.validator, self.options = validator, options
        self.__name__ = validator.__name__

    def __call__(self, text: str):
        try:
            value = self.validator(text, None, **self.options)
        except NeurotomyError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text if isinstance(value, Path) else value

    def __repr__(self) -> str:
        return f"Checked({self.__name__}{''.join(f', {k}={v!r}' for k, v in self.options.items())})"


POSITIVE = Checked(validate.positive_int)
COUNT = Checked(validate.non_negative_int)  # zero allowed: "no fine-tune", "no images"
RATE = Checked(validate.positive_float)  # learning rates: finite, > 0
OUT_FILE = Checked(validate.output_file)
OUT_DIR = Checked(validate.output_dir)
CHECKPOINT_OUT = Checked(validate.output_file, suffix=".safetensors")
SCORES_OUT = Checked(validate.output_file, suffix=".npz")


def model_spec(text: str, name: str | None = None) -> str:
    """MODEL as every command takes it (zoo:NAME, a checkpoint, torchvision:NAME, …), checked without
    loading anything (:func:`neurotomy.loading.check_model_spec`)."""
    from neurotomy.loading import check_model_spec

    if "\0" in text:
        raise validate.fail(name, f"a model name cannot contain a NUL byte, got {text!r}")
    return check_model_spec(text)


MODEL = Checked(model_spec)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """What MODEL needs when it is not a checkpoint: ``--weights`` (a state dict: safetensors, or
    .pt/.pth read with ``torch.load(weights_only=True)``), ``--pretrained`` (torchvision/timm weights
    from the local cache) and the shape a fresh model cannot tell. Add it before :func:`add_data`,
    whose ``--input-size`` (the images' side) is the same option."""
    p.add_argument("--weights", type=Checked(validate.existing_file),
                   help="state dict to load into MODEL (.safetensors, or .pt/.pth read with weights_only)")
    p.add_argument("--pretrained", action="store_true",
                   help="torchvision:/timm: MODEL with its pretrained weights from the local cache")
    p.add_argument("--in-channels", type=Checked(validate.positive_int, maximum=64), default=None,
                   help="input channels of a fresh MODEL (default: its own, 3 for torchvision/timm, 1 for ours)")
    p.add_argument("--num-classes", type=Checked(validate.int_between, low=2, high=100_000), default=None,
                   help="classes of a fresh MODEL (default: its own, 1000 for torchvision/timm, 10 for ours)")
    try:
        p.add_argument("--input-size", type=Checked(validate.positive_int, maximum=4096), default=None,
                       help="side of MODEL's square input images (a file model cannot tell it; default: 224 for "
                            "torchvision/timm, 28 for ours); also resizes images read from files")
    except argparse.ArgumentError:
        pass  # added by add_data already: the same option


def model_options(args) -> dict:
    """The keyword options of :func:`neurotomy.loading.load_model` the command line gave."""
    options = {k: getattr(args, k, None) for k in ("weights", "in_channels", "num_classes", "input_size")}
    options = {k: v for k, v in options.items() if v is not None}
    if getattr(args, "pretrained", False):
        options["pretrained"] = True
    return options


def load_model_arg(args, spec: str | None = None, main: bool | None = None):
    """MODEL (or ``spec``) with the command line's model options, on ``--device``; ``--weights`` and
    ``--pretrained`` apply to the command's main model only (MODEL, or ``main=True``), not to a
    second one (a teacher, a model to compare with). A freshly built model (``torchvision:NAME``
    without weights) draws its initial weights from ``--seed``, and the random state the command
    goes on with is the one it had before."""
    import torch

    from neurotomy.loading import load_model

    options = model_options(args)
    if not (spec is None if main is None else main):
        options = {k: v for k, v in options.items() if k not in ("weights", "pretrained")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(getattr(args, "seed", 0))
        model = load_model(args.model if spec is None else spec, **options)
    return place(model, getattr(args, "device", None))


def dataset_spec(text: str, name: str | None = None) -> str:
    """``--data``: a registered dataset source, written as it takes its argument (``digits``,
    ``idx:PATH`` with PATH a directory, ``torchvision:NAME``), checked without reading any data."""
    from neurotomy.data.sources import ALIASES, DATASET_SOURCES

    source, colon, argument = text.strip().partition(":")
    source = ALIASES.get(source, source)
    if source not in DATASET_SOURCES:
        raise validate.fail(name, f"unknown dataset {text!r}; use one of {', '.join(dataset_specs())}")
    takes = DATASET_SOURCES.tags(source)["argument"]
    if colon and not takes:
        raise validate.fail(name, f"{source} takes no ':{argument}'; write it as {source}")
    if takes and not argument.strip():
        raise validate.fail(name, f"{source} needs its {takes}: write {source}:{takes}")
    if takes == "PATH":
        validate.existing_dir(argument, name)
    return text


DATA = Checked(dataset_spec)


def add_common(p: argparse.ArgumentParser, device: bool | str = True) -> None:
    """``--seed`` and ``--quiet``: every command has them; ``--device`` every command that computes
    (``device=False``: none; a string: what the command does with it, appended to the help)."""
    p.add_argument("--seed", type=Checked(validate.seed), default=0, help="seed for every random draw (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if device:
        add_device(p, device if isinstance(device, str) else "")


def add_device(p: argparse.ArgumentParser, note: str = "") -> None:
    """``--device``, resolved and checked while parsing (a device this machine lacks: one line, exit 2,
    before any work); ``args.device`` is a ``torch.device`` where :func:`load_model_arg` puts models."""
    p.add_argument("--device", type=Checked(device_spec), default="auto", metavar="{auto,cpu,cuda,mps}",
                   help="where to compute: auto (cuda if available, else mps, else cpu; the default), cpu, "
                        "cuda or cuda:N, mps" + (f"; {note}" if note else ""))


def add_data(p: argparse.ArgumentParser, required: bool = False) -> None:
    """The dataset, its directory and options, batch size, an image cap and reader processes."""
    p.add_argument("--data", required=required, type=DATA, help=f"dataset: {', '.join(dataset_specs())} (default: the "
                   "model's own dataset, from the root its checkpoint records; said on stderr unless --quiet)")
    p.add_argument("--root", type=Checked(validate.existing_dir),
                   help="directory of the dataset files (default: the model's recorded root, the shipped subset "
                        "or NEUROTOMY_DATA)")
    add_dataset_options(p)
    p.add_argument("--batch-size", type=POSITIVE, default=256)
    p.add_argument("--max-images", type=POSITIVE, default=None, help="use at most this many images")
    add_workers(p)


def add_dataset_options(p: argparse.ArgumentParser) -> None:
    """``--class-names`` and ``--input-size`` (how to read IDX sets, folders, torchvision); a parser that
    has its own ``--input-size`` (the model's input side: the same meaning) keeps it."""
    p.add_argument("--class-names", type=Checked(parse_class_names),
                   help="class names in label order, comma-separated (default: classes.txt, folder names or 0…K-1)")
    try:
        p.add_argument("--input-size", type=Checked(validate.positive_int, maximum=4096),
                       help="resize and centre-crop the images to N×N")
    except argparse.ArgumentError:
        pass


def dataset_options(args) -> dict:
    """The :func:`~neurotomy.data.load_dataset` options given on the command line. ``--input-size``
    resizes any dataset (digits and fashion-mnist too, after loading), as it does for ``train`` and in
    the Python API: with a fresh ``torchvision:``/``timm:``/file model it is both the model's input side
    and the data's, so the two always agree."""
    return {k: getattr(args, k) for k in ("class_names", "input_size") if getattr(args, k, None) is not None}


def add_workers(p: argparse.ArgumentParser) -> None:
    """``--workers``: DataLoader processes (``main`` makes it the default of every loader)."""
    p.add_argument("--workers", type=Checked(validate.non_negative_int, maximum=256), default=0,
                   help="DataLoader worker processes reading images from disk (image folders, torchvision); "
                        "in-memory datasets are sliced directly (default 0)")


def _say_once(args, line: str) -> None:
    """``line`` on stderr once per command (``data_for`` runs once per split), from the main process."""
    said = vars(args).setdefault("lines_said", set())
    if line not in said and is_main_process():
        said.add(line)
        print(line, file=sys.stderr)


def data_for(model, args, split: str):
    """One split of ``--data`` from ``--root`` (default: the model's own dataset, as its checkpoint records
    it: :func:`~neurotomy.models.data_fit.dataset_for_model`; said on stderr unless ``--quiet``), checked by
    :func:`~neurotomy.models.data_fit.check_data_fits`: differences are one warning line on stderr
    (even with ``--quiet``), a class or channel count mismatch is a one-line error; a trained model sees the
    images normalised as it was trained (:func:`~neurotomy.models.data_fit.fitted_dataset`)."""
    given = getattr(args, "data", None)
    data, differences = fitted_dataset(model, split, given, getattr(args, "root", None), **dataset_options(args))
    if not given and not getattr(args, "quiet", False):
        root = f" from {data.root}" if getattr(data, "root", None) and data.root not in data.name else ""
        _say_once(args, f"neurotomy: no --data given; using the model's own dataset {data.name}{root}")
    if differences:
        _say_once(args, "neurotomy: warning: the data differs from the model's training data: " + "; ".join(differences))
    return data


def add_resume(p: argparse.ArgumentParser) -> None:
    """``--resume``: continue from the state file a long job keeps next to its ``--out``."""
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its state file (--out + .resume, written after every "
                        "epoch or stage and removed on success); the settings must be the same")


def add_force(p: argparse.ArgumentParser, what: str) -> None:
    """``--force``: keep a result although it is worse than what it replaces."""
    p.add_argument("--force", action="store_true", help=what)


def run_state(args):
    """The :class:`~neurotomy.run_state.RunState` beside ``args.out`` (read back with ``--resume``); use it
    as ``with run_state(args) as state:`` around the job and the writing of its output."""
    from neurotomy.run_state import RunState

    return RunState.beside(args.out, resume=args.resume)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2))
