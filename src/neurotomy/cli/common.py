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

from neurotomy.data import load_dataset
from neurotomy.errors import DataError


def add_common(p: argparse.ArgumentParser) -> None:
    """``--seed`` and ``--quiet``: every command has them."""
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_data(p: argparse.ArgumentParser, required: bool = False) -> None:
    """The dataset, its directory, batch size, an image cap and reader processes."""
    p.add_argument("--data", required=required, help="dataset: digits, fashion-mnist, image-folder:PATH, "
                   "torchvision:NAME (default: the model's own dataset)")
    p.add_argument("--root", help="directory of the dataset files (default: shipped subset / NEUROTOMY_DATA)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-images", type=int, default=None, help="use at most this many images")
    add_workers(p)


def add_workers(p: argparse.ArgumentParser) -> None:
    """``--workers``: DataLoader processes (``main`` makes it the default of every loader)."""
    def count(text: str) -> int:
        if not text.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes >= 0")
        return int(text)
    p.add_argument("--workers", type=count, default=0,
                   help="DataLoader worker processes reading images from disk (image folders, torchvision); "
                        "in-memory datasets are sliced directly (default 0)")


def data_for(model, args, split: str):
    """``--data`` (or the dataset the model records) from ``--root``, one split."""
    name = args.data or getattr(getattr(model, "neurotomy_meta", None), "dataset", None)
    if not name:
        raise DataError("the model does not record its dataset; pass --data NAME")
    return load_dataset(name, root=args.root, split=split)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2))
