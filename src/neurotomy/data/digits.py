"""scikit-learn's 8×8 handwritten digits as a :class:`TensorImageDataset`.

A mirrored 2 is no 2: this source does not declare flips label-safe.
"""

from __future__ import annotations

from pathlib import Path

import torch

from neurotomy.data.sources import dataset_source
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset

# Pixel values are 0..16; these are the train-split statistics after scaling to [0, 1].
DIGITS_NORMALIZATION = Normalization(mean=(0.3038,), std=(0.3779,))
_TEST_FRACTION = 0.2
_SPLIT_SEED = 0


def load_digits(split: str) -> TensorImageDataset:
    """The fixed stratified split: 1437 train / 360 test images."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(targets)).numpy(),
        test_size=_TEST_FRACTION,
        random_state=_SPLIT_SEED,
        stratify=targets.numpy(),
    )
    idx = torch.as_tensor(train_idx if split == "train" else test_idx)
    return TensorImageDataset(
        DIGITS_NORMALIZATION.apply(images[idx]),
        targets[idx],
        classes=[str(d) for d in range(10)],
        normalization=DIGITS_NORMALIZATION,
        name="digits",
        flip_safe=False,
    )


@dataset_source("digits", flip_safe=False, help="scikit-learn's 8×8 digits, fixed stratified 80/20 split")
def digits_source(argument: str | None, root: Path | None, split: str) -> TensorImageDataset:
    return load_digits(split)
