"""Make the balanced Fashion-MNIST subset shipped in the package (the first N images per class).

Usage: python tools/make_fmnist_subset.py ../shared/data/fashion-mnist [--train 500 --test 200]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from neurotomy.data.fashion_mnist import shipped_root
from neurotomy.data.idx import read_idx, write_idx


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    picks = [np.flatnonzero(labels == c)[:per_class] for c in range(10)]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=200)
    args = parser.parse_args()
    out = shipped_root()
    out.mkdir(parents=True, exist_ok=True)
    for prefix, per_class in (("train", args.train), ("t10k", args.test)):
        images = read_idx(args.root / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.root / f"{prefix}-labels-idx1-ubyte.gz")
        keep = first_per_class(labels, per_class)
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images[keep])
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels[keep])
        print(prefix, len(keep), "images")


if __name__ == "__main__":
    main()
