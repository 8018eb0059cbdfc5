"""Per-layer latency, measured on this machine and cached: what pruning to a latency is planned on.

A :class:`LayerSpec` is one conv (+ BatchNorm + activation) or linear (+ activation) layer of a
model at given input and output widths, with the input size it sees; a :class:`LatencyRuntime`
times a list of them at a batch size and thread count — ``torch`` here, ``onnx`` (onnxruntime
fp32) and ``onnx-int8`` registered by :mod:`neurotomy.jobs.latency_runtimes` (export and int8
quantization live on this floor's neighbours, which surgery may not import). Every runtime times
through the shared :func:`~neurotomy.timing.interleaved_timing` (interleaved rounds, median).

Timings are cached as JSON, one file per machine and setting — the CPU model string, the runtime
and its library versions, the threads and the batch — keyed inside by the layer's geometry and
widths (:meth:`LayerSpec.key`), so a second prune of the same architecture on the same machine
measures nothing, and another thread count or torch version measures afresh. The directory is
``~/.cache/neurotomy/latency`` unless ``NEUROTOMY_LATENCY_CACHE`` or the caller says otherwise;
files are written atomically and merged with what another process wrote meanwhile.

Example:
    >>> import tempfile
    >>> spec = LayerSpec("conv", 8, 8, kernel=(3, 3), padding=(1, 1), spatial=(8, 8), batchnorm=True,
    ...                  activation="ReLU")
    >>> ms = time_specs([spec, spec.at(8, 4)], TorchRuntime(), batch=2, threads=1,
    ...                 cache_dir=tempfile.mkdtemp(), quiet=True)
    >>> sorted(ms) == sorted([spec.key(), spec.at(8, 4).key()]), all(v > 0 for v in ms.values())
    (True, True)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from neurotomy.device import on_cpu
from neurotomy.errors import PruningError
from neurotomy.files import write_json
from neurotomy.progress import add_task, progress_bar
from neurotomy.provenance import load_average
from neurotomy.registry import Registry
from neurotomy.timing import interleaved_timing, warn_if_busy

CACHE_ENV = "NEUROTOMY_LATENCY_CACHE"
CACHE_FORMAT = 1
# A table entry is the median of LAYER_ROUNDS interleaved rounds of LAYER_REPEATS calls: few, because
# a ResNet-20 table holds a few hundred entries and should take seconds; the whole model is then
# measured with more rounds (MODEL_ROUNDS), and the prediction is checked against that measurement.
LAYER_ROUNDS, LAYER_REPEATS, LAYER_WARMUP = 5, 2, 2
MODEL_ROUNDS, MODEL_REPEATS, MODEL_WARMUP = 9, 3, 3
CHUNK_BYTES = 256 * 2**20  # inputs and outputs of the layers timed together (interleaved) at most
CHUNK_LAYERS = 64

ACTIVATIONS = {cls.__name__: cls for cls in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU,
                                             nn.ELU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardsigmoid)}
"""Activation modules a timed layer carries when the model runs one right after it."""


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One layer as the latency table times it: a ``conv`` (Conv2d, optionally depthwise or grouped, then
    BatchNorm2d if ``batchnorm``) or a ``linear`` layer, then ``activation`` (a name in
    :data:`ACTIVATIONS`, or ``""``), on inputs of ``in_channels`` × ``spatial`` (conv: H, W;
    linear: the dims between the batch and the features, e.g. tokens)."""

    kind: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...] = (1, 1)
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] | str = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    depthwise: bool = False
    bias: bool = False
    spatial: tuple[int, ...] = ()
    batchnorm: bool = False
    activation: str = ""
    groups: int = 1  # a grouped (not depthwise) conv: its widths stay multiples of this

    def at(self, in_channels: int, out_channels: int) -> "LayerSpec":
        """The same layer at other widths (a depthwise conv keeps both equal)."""
        if self.depthwise:
            in_channels = out_channels
        return dataclasses.replace(self, in_channels=int(in_channels), out_channels=int(out_channels))

    def key(self) -> str:
        """The layer's geometry and widths as a cache key, e.g.
        ``conv k3x3 s1x1 p1x1 d1x1 bn relu @28x28 16->8``."""
        dims = lambda t: "x".join(map(str, t)) if isinstance(t, tuple) else str(t)  # noqa: E731
        parts = [self.kind]
        if self.kind == "conv":
            parts += [f"k{dims(self.kernel)}", f"s{dims(self.stride)}", f"p{dims(self.padding)}",
                      f"d{dims(self.dilation)}"] + (["dw"] if self.depthwise else [])
            parts += [f"g{self.groups}"] if self.groups > 1 else []
        parts += (["bias"] if self.bias else []) + (["bn"] if self.batchnorm else [])
        parts += [self.activation.lower()] if self.activation else []
        parts += [f"@{dims(self.spatial) or '-'}", f"{self.in_channels}->{self.out_channels}"]
        return " ".join(parts)

    def input_shape(self) -> tuple[int, ...]:
        """One input's shape (no batch): C × H × W for a conv, spatial × features for a linear layer."""
        return (self.in_channels, *self.spatial) if self.kind == "conv" else (*self.spatial, self.in_channels)

    def build(self, seed: int = 0) -> nn.Module:
        """The layer as a module in eval mode, with random weights (latency does not depend on them;
        the caller's random state is left alone)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._build()

    def _build(self) -> nn.Module:
        if self.kind == "conv":
            layers: list[nn.Module] = [nn.Conv2d(self.in_channels, self.out_channels, self.kernel, self.stride,
                                                 self.padding, self.dilation,
                                                 groups=self.out_channels if self.depthwise else self.groups,
                                                 bias=self.bias)]
            if self.batchnorm:
                layers.append(nn.BatchNorm2d(self.out_channels))
        else:
            layers = [nn.Linear(self.in_channels, self.out_channels, bias=self.bias)]
        if self.activation:
            layers.append(ACTIVATIONS[self.activation]())
        return nn.Sequential(*layers).eval()

    def bytes(self, batch: int) -> int:
        """Bytes of one batch of float32 inputs and outputs (a bound for chunking)."""
        size = 1
        for d in self.spatial:
            size *= d
        return 4 * batch * size * (self.in_channels + self.out_channels)


class LatencyRuntime:
    """How one runtime times layers and whole models on the CPU. Subclasses set ``name`` and
    implement :meth:`time_layers` and :meth:`time_models`, both through
    :func:`~neurotomy.timing.interleaved_timing` (one record per item: ``median_ms``, ``min_ms``,
    ``threads``, ``load_average``)."""

    name = ""

    def versions(self) -> dict[str, str]:
        """The library versions its timings depend on (part of the cache key)."""
        return {"torch": torch.__version__}

    def time_layers(self, specs: Sequence[LayerSpec], batch: int, threads: int) -> list[dict]:
        raise NotImplementedError

    def time_models(self, models: Sequence[nn.Module], input_shape: tuple[int, ...], batch: int,
                    threads: int) -> list[dict]:
        raise NotImplementedError


LATENCY_RUNTIMES: Registry[type[LatencyRuntime]] = Registry(
    "latency runtime", PruningError, hint="(onnx and onnx-int8: import neurotomy.jobs.latency_runtimes)")


@LATENCY_RUNTIMES.register("torch")
class TorchRuntime(LatencyRuntime):
    """PyTorch eager on the CPU, under ``torch.inference_mode()``."""

    name = "torch"

    @torch.inference_mode()
    def time_layers(self, specs: Sequence[LayerSpec], batch: int, threads: int) -> list[dict]:
        generator = torch.Generator().manual_seed(0)
        calls = [functools.partial(spec.build(), torch.randn(batch, *spec.input_shape(), generator=generator))
                 for spec in specs]
        return interleaved_timing(calls, rounds=LAYER_ROUNDS, repeats=LAYER_REPEATS, warmup=LAYER_WARMUP,
                                  threads=threads, warn=False)

    @torch.inference_mode()
    def time_models(self, models: Sequence[nn.Module], input_shape: tuple[int, ...], batch: int,
                    threads: int) -> list[dict]:
        x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
        copies = [on_cpu(m) for m in models]  # CPU latency, whatever device the run computes on
        training = [m.training for m in copies]
        for m in copies:
            m.eval()
        try:
            return interleaved_timing([functools.partial(m, x) for m in copies], rounds=MODEL_ROUNDS,
                                      repeats=MODEL_REPEATS, warmup=MODEL_WARMUP, threads=threads, warn=False)
        finally:
            for m, mode in zip(copies, training):
                m.train(mode)


def runtime_named(runtime: str | LatencyRuntime) -> LatencyRuntime:
    """A runtime instance from its registered name (or the instance itself)."""
    return runtime if isinstance(runtime, LatencyRuntime) else LATENCY_RUNTIMES.get(runtime)()


def cpu_model() -> str:
    """The CPU's model string (``/proc/cpuinfo``'s ``model name``; else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def default_cache_dir() -> Path:
    """``$NEUROTOMY_LATENCY_CACHE``, else ``~/.cache/neurotomy/latency``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "neurotomy" / "latency").expanduser()


class LatencyCache:
    """The timings of one machine and setting (``key``): a JSON file in ``directory`` named by the
    key's hash, holding the key itself and ``entries`` (layer key → ``[median ms, min ms, load]``).
    A file that cannot be read, or holds another key, counts as empty (it is only a cache)."""

    def __init__(self, directory: str | os.PathLike, key: dict) -> None:
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(directory).expanduser() / f"{key.get('runtime', 'latency')}-{digest}.json"
        self.entries = self._read()

    def _read(self) -> dict[str, list[float]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("key") != self.key or not isinstance(data.get("entries"), dict):
            return {}
        return {k: v for k, v in data["entries"].items() if isinstance(v, list) and v and isinstance(v[0], (int, float))}

    def get(self, key: str) -> float | None:
        """The cached median milliseconds of layer ``key``, or None."""
        entry = self.entries.get(key)
        return float(entry[0]) if entry else None

    def update(self, new: dict[str, list[float]]) -> Path:
        """Add ``new`` entries and write the file atomically, keeping what another process added."""
        self.entries = {**self._read(), **self.entries, **new}
        return write_json(self.path, {"key": self.key, "entries": dict(sorted(self.entries.items()))})


def cache_key(runtime: LatencyRuntime, batch: int, threads: int) -> dict:
    """What a timing depends on besides the layer: machine, runtime and versions, threads, batch."""
    return {"format": CACHE_FORMAT, "cpu": cpu_model(), "cores": os.cpu_count(), "runtime": runtime.name,
            **runtime.versions(), "threads": int(threads), "batch": int(batch)}


def _chunks(specs: list[LayerSpec], batch: int) -> list[list[LayerSpec]]:
    """Consecutive runs of specs small enough to time together (memory bound and count)."""
    chunks: list[list[LayerSpec]] = [[]]
    size = 0
    for spec in specs:
        if chunks[-1] and (size + spec.bytes(batch) > CHUNK_BYTES or len(chunks[-1]) >= CHUNK_LAYERS):
            chunks.append([])
            size = 0
        chunks[-1].append(spec)
        size += spec.bytes(batch)
    return [c for c in chunks if c]


def timed_in_chunks(specs: Sequence[LayerSpec], runtime: LatencyRuntime, batch: int,
                    threads: int) -> Iterator[tuple[LayerSpec, dict]]:
    """Each spec with its timing (``runtime``'s record), timed fresh, interleaved within chunks small
    enough to hold in memory together (:func:`_chunks`)."""
    for chunk in _chunks(list(specs), batch):
        yield from zip(chunk, runtime.time_layers(chunk, batch, threads))


def time_specs(specs: Sequence[LayerSpec], runtime: LatencyRuntime, batch: int, threads: int,
               cache_dir: str | os.PathLike | None = None, quiet: bool | None = None,
               info: dict | None = None) -> dict[str, float]:
    """Median milliseconds of each distinct layer in ``specs`` (by :meth:`LayerSpec.key`): from
    the cache where it holds them, else timed in ``runtime`` (interleaved in chunks) and cached.
    ``info``, when given, receives ``measured``, ``cached``, ``seconds``, ``cache`` (the file),
    the ``load_average`` ``[start, end]`` of the measuring and ``cached_keys`` (the keys read from
    the cache: timed on an earlier day, maybe at another speed)."""
    cache = LatencyCache(cache_dir or default_cache_dir(), cache_key(runtime, batch, threads))
    unique = {spec.key(): spec for spec in specs}
    ms = {k: cache.get(k) for k in unique}
    missing = [unique[k] for k, v in ms.items() if v is None]
    cached_keys = sorted(k for k, v in ms.items() if v is not None)
    start, load_start = time.perf_counter(), load_average()[0]
    if missing:
        warn_if_busy(load_start, stacklevel=3)
        new: dict[str, list[float]] = {}
        with progress_bar(quiet) as bar:
            task = add_task(bar, f"latency table ({runtime.name})", len(missing))
            for spec, timing in timed_in_chunks(missing, runtime, batch, threads):
                new[spec.key()] = [round(timing["median_ms"], 5), round(timing["min_ms"], 5),
                                   timing["load_average"][0]]
                ms[spec.key()] = timing["median_ms"]
                bar.advance(task, 1)
        cache.update(new)
    if info is not None:
        info.update(measured=len(missing), cached=len(cached_keys), cached_keys=cached_keys,
                    seconds=round(time.perf_counter() - start, 3), cache=str(cache.path),
                    load_average=[load_start, load_average()[0]])
    return {k: float(v) for k, v in ms.items()}
