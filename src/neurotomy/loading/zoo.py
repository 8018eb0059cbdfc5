"""Trained models shipped inside the package, addressed as ``zoo:NAME``.

Each entry was made by the command recorded in ``benchmarks/train_zoo.py``; its measured accuracy
and training time are in ``benchmarks/results/zoo.json`` and in the checkpoint's metadata.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from neurotomy.checkpoint import read_meta
from neurotomy.errors import ModelError

ZOO = {
    "lenet5-digits": "LeNet-5 on scikit-learn digits (8×8)",
    "resnet20-fmnist": "ResNet-20 on the full Fashion-MNIST (28×28)",
    "resnet56-fmnist": "ResNet-56 on the full Fashion-MNIST, 3 epochs only (for depth studies)",
    "vgg16-fmnist": "VGG-16-BN at width 0.25 (no shortcuts; for depth studies) on the full Fashion-MNIST",
    "vit-tiny-fmnist": "ViT-tiny (patch 4, width 128, 6 blocks, 4 heads) on the full Fashion-MNIST, distilled from ResNet-20",
}


def zoo_path(name: str) -> Path:
    if name not in ZOO:
        raise ModelError(f"no zoo model {name!r}; available: {', '.join(ZOO)} (see `neurotomy zoo`)")
    path = Path(str(resources.files("neurotomy") / "assets" / "zoo" / f"{name}.safetensors"))
    if not path.exists():
        raise ModelError(f"zoo model {name!r} is not installed at {path}; reinstall neurotomy")
    return path


def zoo_entries() -> list[dict]:
    """Name, description, architecture and recorded test accuracy of each shipped model."""
    rows = []
    for name, description in ZOO.items():
        try:
            meta = read_meta(zoo_path(name))
            acc = meta.metrics.get("test", {}).get("accuracy")
            rows.append({"name": f"zoo:{name}", "description": description, "arch": meta.arch,
                         "dataset": meta.dataset, "test_accuracy": acc})
        except ModelError:
            rows.append({"name": f"zoo:{name}", "description": description, "arch": None,
                         "dataset": None, "test_accuracy": None})
    return rows
