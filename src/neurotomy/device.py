"""Where a run computes: ``--device cpu|cuda|mps|auto`` and ``device=`` in the Python API.

One rule for the whole library: **follow the model's device**. The CLI (and the API entry points
given ``device=``) move the model once, after loading, with :func:`place`; every function that
turns data into tensors moves each batch to :func:`model_device` of the model it feeds, and brings
results it returns (logits, scores, statistics) back to the CPU. ``device=None`` in the API means
"leave the model where it is".

``auto`` is CUDA when available, else Apple's MPS when available, else the CPU. Asking for a device
the machine lacks is a :class:`~neurotomy.errors.DeviceError` (one line, exit 2 in the CLI) before
any work. Latency (``neurotomy.measure``, ``neurotomy.timing``) and ONNX export stay on the CPU: they
measure and produce CPU artefacts whatever the device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import re

import torch
from torch import nn

from neurotomy.errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
_SPEC = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d{1,3}))?$")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or ``None``) → cuda if available, else mps if available, else cpu; ``cpu``,
    ``cuda``, ``cuda:N``, ``mps`` → that device, checked to be present (:class:`DeviceError` if not)."""
    if spec is None:
        spec = "auto"
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise DeviceError(f"a device is one of {', '.join(DEVICE_CHOICES)} (or cuda:N), got {spec!r}")
    match = _SPEC.match(spec.strip().lower())
    if match is None:
        raise DeviceError(f"unknown device {spec!r}; use one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    kind, index = match.group(1), match.group(2)
    if index is not None and kind != "cuda":
        raise DeviceError(f"only cuda takes an index (cuda:N), got {spec!r}")
    if kind == "auto":
        return torch.device("cuda") if cuda_available() else torch.device("mps") if mps_available() \
            else torch.device("cpu")
    if kind == "cuda":
        if not cuda_available():
            raise DeviceError(f"device {spec!r} asked for, but CUDA is not available on this machine "
                              f"(torch {torch.__version__}); use cpu or auto")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0…cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", int(index)) if index is not None else torch.device("cuda")
    if kind == "mps" and not mps_available():
        raise DeviceError("device 'mps' asked for, but Apple's MPS is not available on this machine; use cpu or auto")
    return torch.device(kind)


def device_spec(value, name: str | None = None) -> torch.device:
    """The validator of ``--device`` (``neurotomy.cli.common.Checked``): the resolved device."""
    return resolve_device(value)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def place(model: nn.Module, device: str | torch.device | None = None) -> nn.Module:
    """``model`` moved to ``device`` (resolved as :func:`resolve_device`); ``None`` leaves it where it is."""
    if device is None:
        return model
    return model.to(resolve_device(device))


def to_device(device: torch.device, *tensors: torch.Tensor):
    """``tensors`` on ``device`` (one tensor back for one given); pinned/asynchronous copies on CUDA."""
    moved = tuple(t.to(device, non_blocking=device.type == "cuda") if isinstance(t, torch.Tensor) else t
                  for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def on_cpu(model: nn.Module) -> nn.Module:
    """``model`` itself when it is on the CPU, else a CPU copy (the model stays where it is): for
    latency and ONNX export, which measure and produce CPU artefacts whatever ``--device``."""
    if model_device(model).type == "cpu":
        return model
    import copy

    return copy.deepcopy(model).cpu()


def release_memory() -> None:
    """Give the memory of dropped models back before the next big allocation: collect reference
    cycles now (a torch-pruning dependency graph and the model copy it traced form one, which
    Python's collector, counting objects rather than bytes, reaches only every few copies: a search
    over ViT-B candidates grew by ~450 MB per candidate), then return the freed heap to the system
    (glibc keeps freed blocks under its mmap threshold — a ViT-B weight is one — and the process grew
    by ~40 MB per candidate even with cycles collected) and CUDA's cached blocks to the driver.

    >>> release_memory()
    """
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    trim = c_function("malloc_trim")  # glibc's; macOS and musl have none
    if trim is not None:
        trim(0)


@functools.cache
def c_function(name: str):
    """The C library's function ``name`` (ctypes), or None where there is no such library or function
    (Windows; ``malloc_trim`` outside glibc).

    >>> c_function("no_such_function") is None
    True
    """
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or None), name)
    except (OSError, AttributeError, TypeError):
        return None
