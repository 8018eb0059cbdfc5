"""Several processes, one result: the data-parallel plumbing of training and probing.

Run any command under ``accelerate launch --multi_gpu --num_processes N -m neurotomy.cli ...`` (or
``torchrun --nproc_per_node N -m neurotomy.cli ...``) and it works unchanged: each process reads its shard of the same seeded global order
(:func:`neurotomy.data.batches.select_shard`), training wraps the model in DDP so gradients are
averaged after every global batch, probing sums its statistics across processes, and only the main
process draws progress bars and writes files. With one process nothing here runs at all, so
single-process results stay bit-identical to what they were before this module existed.

Why HF Accelerate rather than Lightning Fabric: Accelerate is a thin layer over ``torch.distributed``
that leaves our own ``fit`` loop in charge (``prepare_model`` → DDP, ``reduce``/``gather`` for
statistics), reads the environment that ``accelerate launch`` *or* ``torchrun`` sets, and runs
multi-process CPU training on gloo with no extra configuration; it is also already a dependency.
Fabric would bring the Lightning package for the same two calls.

What makes N processes match one process with the same global batch:

* **data order and augmentation** — every process draws the global permutation and the crop/flip
  of *every* image of the global batch from the same generator, then keeps its own rows;
* **gradients** — DDP averages per-process gradients; each process scales its loss by
  ``N · local / global`` images, so the average is the global batch's mean loss gradient even
  when the shards differ in size;
* **BatchNorm** — a per-process BatchNorm would normalise by shard statistics; here BatchNorm2d
  layers sum their per-channel Σx, Σx², count across processes (differentiably) while training,
  so they normalise by global-batch statistics, exactly as one process does. (torch's
  ``SyncBatchNorm`` refuses CPU tensors, hence our own.)

Remaining differences are float summation order: ~2e-6 in the weights after three fine-tuning
steps of the trained ResNet-20 (``tests/test_distributed.py``; a freshly initialised network
amplifies them as it amplifies any 1e-7 perturbation). One edge: a last batch smaller than the
number of processes is skipped by all of them.

Processes run on CPU with gloo, as everything in neurotomy does (``fit`` never moves batches to a
device). On this launcher's flags: ``--multi_gpu`` is Accelerate's name for its torchrun-style
launcher and works without GPUs; ``--cpu`` with several processes goes through ``mpirun`` only,
and without it Accelerate starts a single process.

Example (one process: nothing to shard, nothing to reduce):
    >>> import torch
    >>> process_count(), is_main_process(), probe_shard()
    (1, True, None)
    >>> reduce_state({"conv1": {"sum": torch.ones(2)}})["conv1"]["sum"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch
from torch import nn

from neurotomy.data.batches import shard_rows

_WORLD_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def _launched_processes() -> int:
    for key in _WORLD_ENV:
        if os.environ.get(key):
            return int(os.environ[key])
    return 1


def process_count() -> int:
    """How many processes take part (1 unless launched by ``accelerate launch``/``torchrun``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return _launched_processes()


def process_index() -> int:
    """This process's rank (0 on the main process)."""
    if _launched_processes() > 1:
        _ensure_initialised()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def is_main_process() -> bool:
    """True where files are written and progress is drawn."""
    return process_index() == 0


def _state():
    """Accelerate's process state, created (process group and all) on first use when launched."""
    from accelerate import PartialState

    return PartialState(cpu=True)


def _ensure_initialised() -> None:
    if process_count() > 1 and not torch.distributed.is_initialized():
        _state()


def wait_for_everyone() -> None:
    """Barrier across processes; no-op with one process."""
    if process_count() > 1:
        _state().wait_for_everyone()


def shutdown() -> None:
    """End this process's part of a launched run: wait for the others (the main process may still
    be writing), then close the process group — a gloo group left open aborts the process at exit."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def probe_shard() -> tuple[int, int] | None:
    """``(index, count)`` for :func:`~neurotomy.data.batches.iterate_batches`, or None alone."""
    count = process_count()
    if count == 1:
        return None
    _ensure_initialised()
    return process_index(), count


# ---------------------------------------------------------------- reductions (the one place)

def reduce_state(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Combine per-process probing state in place: tensors are sums over images (Σ of values,
    of ranks, of counts — the state every :class:`~neurotomy.scores.base.DataCriterion` keeps), so
    they are all-reduced by summing; lists hold per-image records and are concatenated in process
    order. A process that saw no batch contributes zeros / nothing. Returns ``state``."""
    if process_count() == 1:
        return state
    from accelerate.utils import gather_object, reduce

    _ensure_initialised()
    layout = {}  # the union of every process's keys, so that the collectives below pair up
    for part in gather_object([_layout(state)]):
        for layer, keys in part.items():
            layout.setdefault(layer, {}).update(keys)
    for layer in sorted(layout):
        mine = state.setdefault(layer, {})
        for key, (kind, shape, dtype) in sorted(layout[layer].items()):
            if kind == "tensor":
                local = mine.get(key, torch.zeros(shape, dtype=getattr(torch, dtype)))
                mine[key] = reduce(local.contiguous(), reduction="sum")
            else:
                mine[key] = _concat_lists(gather_object([mine.get(key, [])]))
    return state


def _layout(state: dict[str, dict[str, Any]]) -> dict[str, dict[str, tuple]]:
    layout: dict[str, dict[str, tuple]] = {}
    for layer, keys in state.items():
        for key, value in keys.items():
            if isinstance(value, torch.Tensor):
                layout.setdefault(layer, {})[key] = ("tensor", tuple(value.shape), str(value.dtype).split(".")[-1])
            elif isinstance(value, list):
                layout.setdefault(layer, {})[key] = ("list", None, None)
            else:
                raise TypeError(f"cannot reduce probing state {layer}/{key} of type {type(value).__name__}")
    return layout


def _concat_lists(per_process: list[list]) -> list:
    return [item for part in per_process for item in part]


def gather_records(records: list) -> list:
    """Every process's list of records, concatenated in process order (a copy on each process)."""
    if process_count() == 1:
        return list(records)
    from accelerate.utils import gather_object

    _ensure_initialised()
    return _concat_lists(gather_object([records]))


def gather_rows(tensor: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate each process's rows (its :func:`shard_rows` of ``total``) into the full tensor."""
    count = process_count()
    if count == 1:
        return tensor
    _ensure_initialised()
    biggest = shard_rows(total, 0, count)
    width = biggest.stop - biggest.start
    padded = tensor.new_zeros((width, *tensor.shape[1:]))
    padded[:len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in range(count)]
    torch.distributed.all_gather(parts, padded.contiguous())
    sizes = [len(range(total)[shard_rows(total, i, count)]) for i in range(count)]
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def sum_over_processes(*values: float) -> tuple[float, ...]:
    """Scalars summed over processes (the training record's seen/correct/loss totals)."""
    if process_count() == 1:
        return values
    from accelerate.utils import reduce

    _ensure_initialised()
    total = reduce(torch.tensor(values, dtype=torch.float64), reduction="sum")
    return tuple(float(v) for v in total)


# ---------------------------------------------------------------- training

class _SumAcrossProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward is the all-reduce of the gradients: every process's loss
    depends on every process's inputs through the summed value."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _SumAcrossProcesses.apply(grad)


class _GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch across processes.

    Only ``__class__`` of an existing BatchNorm2d is swapped to this (parameters, buffers and
    state-dict keys untouched) for the duration of a data-parallel ``fit``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats and torch.distributed.is_initialized()):
            return super().forward(x)
        # Σx and Σx² in float64, summed across processes with a differentiable all-reduce, so the
        # backward pass also sees the global batch (Ioffe & Szegedy 2015, Alg. 1, over all shards).
        local = x.double()
        count = x.new_tensor([x.numel() / x.shape[1]], dtype=torch.float64)
        stats = torch.cat([local.sum((0, 2, 3)), (local * local).sum((0, 2, 3)), count])
        stats = _SumAcrossProcesses.apply(stats)
        c = self.num_features
        n = stats[2 * c]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp(min=0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            unbiased = var * n / (n - 1).clamp(min=1)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        shape = (1, c, 1, 1)
        y = (local - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


@contextlib.contextmanager
def _global_batchnorm(model: nn.Module) -> Iterator[None]:
    swapped = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    for m in swapped:
        m.__class__ = _GlobalBatchNorm
    try:
        yield
    finally:
        for m in swapped:
            m.__class__ = nn.BatchNorm2d


class DataParallel:
    """One process's part in data-parallel training, as :func:`neurotomy.train.fit` uses it.

    With one process ``module`` is the model itself and every method is the identity.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.count = process_count()
        self.index = process_index()
        self.module: nn.Module = model

    @property
    def shard(self) -> tuple[int, int] | None:
        return None if self.count == 1 else (self.index, self.count)

    def part(self, global_size: int) -> tuple[slice, int] | None:
        """(rows, global batch size) of this process's shard, for the augmentation's draws."""
        return None if self.count == 1 else (shard_rows(global_size, self.index, self.count), global_size)

    def step_sizes(self, sizes: list[int]) -> list[int]:
        """Global batch sizes of the steps every process takes (see ``select_shard``)."""
        return sizes if self.count == 1 else [s for s in sizes if s >= self.count]

    def loss_for_backward(self, loss: torch.Tensor, local: int, global_size: int) -> torch.Tensor:
        """The loss whose DDP-averaged gradient is the global batch's mean-loss gradient."""
        if self.count == 1:
            return loss
        return loss * (self.count * local / global_size)

    @contextlib.contextmanager
    def active(self) -> Iterator["DataParallel"]:
        """Wrap the model in DDP (through Accelerate) with global-batch BatchNorm, for a ``with``."""
        if self.count == 1:
            yield self
            return
        accelerator = _accelerator()
        with _global_batchnorm(self.model):
            self.module = accelerator.prepare_model(self.model)
            try:
                yield self
            finally:
                self.module = self.model
                accelerator._models.clear()  # drop Accelerate's reference to the DDP wrapper


def _accelerator():
    from accelerate import Accelerator

    _ensure_initialised()
    return Accelerator(cpu=True)


def data_parallel(model: nn.Module) -> contextlib.AbstractContextManager[DataParallel]:
    """``with data_parallel(model) as dp:`` — forward through ``dp.module``; see :class:`DataParallel`."""
    return DataParallel(model).active()


__all__ = ["DataParallel", "data_parallel", "gather_records", "gather_rows", "is_main_process",
           "probe_shard", "process_count", "process_index", "reduce_state", "shutdown", "sum_over_processes",
           "wait_for_everyone"]
