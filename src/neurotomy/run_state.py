"""Resumable runs: one state file next to a job's output (``--out PATH`` → ``PATH.resume``).

:class:`RunState` is a safetensors file written atomically after every epoch of a fit and every
finished stage of a job: tensors as tensors, everything else as JSON in the header — never a
pickle. It holds the model, optimizer and scheduler states, every RNG state (Python, NumPy, torch,
CUDA, the data-order generator), the epoch or stage reached and the settings of the run, so that
``--resume`` continues exactly where a killed run stopped (same weights, bit for bit) and refuses
a run whose settings differ. :func:`neurotomy.train.fit` saves and resumes epochs through it; the
jobs save their stages with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from neurotomy.distributed import is_main_process
from neurotomy.errors import NeurotomyError, ResumeError, TrainingError, WorseResultError
from neurotomy.files import atomic_write

STATE_SUFFIX = ".resume"
"""The state file of ``--out PATH`` is ``PATH.resume``."""
STATE_VERSION = 1
_META_KEY = "neurotomy_state"
PAUSE_ENV = "NEUROTOMY_TEST_PAUSE_AFTER_EPOCH"
"""Test hook: after saving epoch N (this variable's value) a fit sleeps, so a test can kill it there."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a job with a :class:`RunState`; the message says how to resume."""


def weights_digest(model: nn.Module) -> str:
    """A short SHA-256 of every tensor of ``model.state_dict()`` (names, dtypes, shapes, bytes).

    Example:
        >>> a = nn.Linear(2, 2); b = nn.Linear(2, 2)
        >>> len(weights_digest(a)), weights_digest(a) == weights_digest(b)
        (16, False)
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def fit_fingerprint(model: nn.Module, data: Dataset, settings: dict, teacher: nn.Module | None = None) -> dict:
    """What a resumed fit must share with the interrupted one: settings, data, starting weights."""
    return _plain({"settings": settings, "data": f"{getattr(data, 'name', '') or type(data).__name__}:{len(data)}",
                   "weights": weights_digest(model),
                   "teacher": weights_digest(teacher) if teacher is not None else None})


def rng_state() -> dict:
    """Every global random state: Python, NumPy, torch (and CUDA once initialised)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, key.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Set every global random state from :func:`rng_state`'s record."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj: Any) -> Any:
    """JSON's view of ``obj`` (tuples become lists, paths strings), to compare settings."""
    return json.loads(json.dumps(obj, default=str))


def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON for ``obj`` with every tensor moved into ``tensors`` under a key starting with ``key``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return _encode(torch.from_numpy(np.array(obj)), key, tensors)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{key}/{k}", tensors) for k, v in obj.items()}
        # non-string keys (an optimizer's parameter indices) must come back as they were
        return {"__items__": [[_encode(k, f"{key}/{i}.key", tensors), _encode(v, f"{key}/{i}", tensors)]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"a state file stores tensors and JSON values, not a {type(obj).__name__} ({key})")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def _first_difference(saved: Any, now: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in list(saved) + [k for k in now if k not in saved]:
            found = _first_difference(saved.get(key), now.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if saved == now else (prefix.rstrip("."), saved, now)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


class RunState:
    """What a long job has done so far, in one file written atomically after every epoch or stage.

    The file is safetensors (never pickle): the tensors — model, optimizer, RNG states — as tensors,
    everything else (settings, epoch reached, scheduler, history, stage results) as JSON in its
    header. ``fit(…, state=s, state_key=k)`` saves and resumes epochs under ``k``; a job saves each
    finished stage with :meth:`save_stage` and skips it on resume with :meth:`load_stage` (which also
    puts back the random state the stage left, so later stages draw what they drew before), and
    declares its settings with :meth:`expect`, so resuming with other settings is refused.

    Used as a context manager around the job *and* the writing of its output: on success the file is
    removed (also when training diverged: resuming would diverge again, and after a user error — a
    :class:`~neurotomy.errors.NeurotomyError` the same settings would only meet again — when this run
    wrote the file); on any other error it stays for ``--resume``; Ctrl-C becomes :class:`Interrupted`,
    whose one line says where the state is and how to resume.

    Example:
        >>> import tempfile
        >>> from neurotomy.data import load_dataset
        >>> from neurotomy.train import TrainConfig, fit, seed_everything
        >>> from neurotomy.models import build_model
        >>> path = Path(tempfile.mkdtemp()) / "lenet.safetensors"
        >>> data, config = load_dataset("digits"), TrainConfig(epochs=1, batch_size=64, quiet=True)
        >>> with RunState.beside(path) as state:  # with resume=True, fit would continue from the file
        ...     _ = seed_everything(0); model = build_model("lenet5", 1, 10, 8)
        ...     _ = fit(model, data, config, state=state)
        ...     state.path.name, state.path.exists()
        ('lenet.safetensors.resume', True)
        >>> state.path.exists()  # removed on success
        False
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False) -> None:
        self.path = Path(path)
        self.resume = resume
        self._json: dict = {"version": STATE_VERSION, "settings": {}, "stages": {}, "fits": {}}
        self._tensors: dict[str, torch.Tensor] = {}
        self._progress = ""
        self._written = False  # by this run: only then may a user error remove the file
        if resume:
            self._read()
        elif self.path.exists() and is_main_process():
            print(f"neurotomy: {self.path} holds an interrupted run; starting over (pass --resume to continue it)",
                  file=sys.stderr)

    @classmethod
    def beside(cls, out: str | os.PathLike, resume: bool = False) -> "RunState":
        """The state of the job writing ``out``: the file ``out`` + :data:`STATE_SUFFIX`."""
        out = Path(out)
        return cls(out.with_name(out.name + STATE_SUFFIX), resume)

    # -------------------------------------------------------------- settings
    def expect(self, settings: dict, part: str = "job") -> None:
        """Record the settings of the job (or of one ``part`` of it, e.g. the prune inside a
        dissection), or check them against the interrupted run's."""
        settings = _plain(settings)
        saved = self._json["settings"].get(part)
        if saved is None:
            self._json["settings"][part] = settings
            return
        difference = _first_difference(saved, settings)
        if difference:
            name, before, now = difference
            raise ResumeError(f"--resume: {self.path} was written with {name}={_short(before)}, this run has "
                              f"{name}={_short(now)}; rerun with the same settings, or without --resume to start over")

    # -------------------------------------------------------------- stages
    def has_stage(self, name: str) -> bool:
        return name in self._json["stages"]

    def save_stage(self, name: str, result: Any) -> None:
        """Save a finished stage's ``result`` (JSON values and tensors) with the random state after it."""
        prefix = f"stage/{name}"
        self._drop(prefix)
        self._json["stages"][name] = {"result": _encode(result, f"{prefix}/result", self._tensors),
                                      "rng": _encode(rng_state(), f"{prefix}/rng", self._tensors)}
        self._progress = f"the results up to stage {name!r}"
        self._write()

    def load_stage(self, name: str) -> Any:
        """A saved stage's result; the global random state becomes what that stage left behind."""
        entry = self._json["stages"][name]
        restore_rng(_decode(entry["rng"], self._tensors))
        return _decode(entry["result"], self._tensors)

    # -------------------------------------------------------------- fits
    def resume_fit(self, key: str, fingerprint: dict, model: nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler, generator: torch.Generator) -> tuple[int, list[dict]]:
        """Load fit ``key``'s last saved epoch into the objects; (epochs done, history), or (0, [])."""
        entry = self._json["fits"].get(key)
        if entry is None:
            return 0, []
        difference = _first_difference(entry["fingerprint"], fingerprint)
        if difference:
            name, before, now = difference
            raise ResumeError(f"--resume: the interrupted run's {key!r} had {name}={_short(before)}, this one has "
                              f"{name}={_short(now)}; rerun with the same settings and model, or without --resume")
        saved = _decode({k: entry[k] for k in ("model", "optimizer", "scheduler", "generator", "rng")}, self._tensors)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        restore_rng(saved["rng"])
        return entry["epoch"], list(entry["history"])

    def save_fit(self, key: str, fingerprint: dict, epoch: int, epochs: int, history: list[dict], model: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator) -> None:
        """Save everything epoch ``epoch + 1`` of fit ``key`` depends on."""
        prefix = f"fit/{key}"
        self._drop(prefix)
        tensors = self._tensors
        self._json["fits"][key] = {
            "epoch": epoch, "epochs": epochs, "fingerprint": fingerprint, "history": _plain(history),
            "model": _encode(model.state_dict(), f"{prefix}/model", tensors),
            "optimizer": _encode(optimizer.state_dict(), f"{prefix}/optimizer", tensors),
            "scheduler": _encode(scheduler.state_dict(), f"{prefix}/scheduler", tensors),
            "generator": _encode(generator.get_state(), f"{prefix}/generator", tensors),
            "rng": _encode(rng_state(), f"{prefix}/rng", tensors)}
        self._progress = f"the state after epoch {epoch} of {epochs}"
        self._write()
        if os.environ.get(PAUSE_ENV) == str(epoch):
            time.sleep(600)

    def forget_fit(self, key: str) -> None:
        """Drop fit ``key`` (its stage's result now holds what it made); written with the next save."""
        self._json["fits"].pop(key, None)
        self._drop(f"fit/{key}")

    # -------------------------------------------------------------- the file
    def finish(self) -> None:
        """The job's output is written: the state is no longer needed."""
        if is_main_process():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunState":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is None or issubclass(kind, TrainingError):  # a diverged run would only diverge again
            self.finish()
        elif issubclass(kind, NeurotomyError) and self._stale_after_error(kind):
            self.finish()
        elif issubclass(kind, KeyboardInterrupt) and not isinstance(exc, Interrupted):
            raise Interrupted(self._interrupted_message()) from None
        return False

    def _stale_after_error(self, kind: type) -> bool:
        """Whether a run that ended in user error ``kind`` leaves a state file nobody can use: one this
        run wrote (a resumed run's file, or an older run's it never overwrote, is the user's) after
        which the same settings would fail the same way. A :class:`WorseResultError` is the exception:
        the same command with ``--force --resume`` continues from the work already done."""
        return self._written and not self.resume and not issubclass(kind, WorseResultError)

    def _interrupted_message(self) -> str:
        if not self.path.exists():
            return "interrupted before the first epoch or stage ended; nothing was saved to resume"
        return (f"interrupted; {self._progress or 'the work done so far'} is saved in {self.path} — run the same "
                f"command with --resume to continue")

    def _drop(self, prefix: str) -> None:
        for name in [n for n in self._tensors if n.startswith(prefix + "/")]:
            del self._tensors[name]

    def _write(self) -> None:
        if not is_main_process():  # under `accelerate launch` every process holds the same state
            return
        from safetensors.torch import save_file

        header = {_META_KEY: json.dumps(self._json)}
        self._written = True
        atomic_write(self.path, lambda tmp: save_file(self._tensors, str(tmp), metadata=header))

    def _read(self) -> None:
        from safetensors import safe_open

        if not self.path.is_file():
            raise ResumeError(f"--resume: there is no state file {self.path}; nothing to resume (run without "
                              "--resume to start)")
        try:
            with safe_open(str(self.path), "pt") as f:
                header = json.loads((f.metadata() or {})[_META_KEY])
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if header.get("version") != STATE_VERSION:
                raise ValueError(f"version {header.get('version')!r}, expected {STATE_VERSION}")
            self._json.update({k: header[k] for k in ("settings", "stages", "fits")})
        except Exception as exc:  # any damage: one line, and the way out
            reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
            raise ResumeError(f"--resume: cannot read the state file {self.path} ({reason}); delete it and run "
                              "without --resume") from None
        self._tensors = tensors
        fits = self._json["fits"]
        if fits:
            last = list(fits.values())[-1]
            self._progress = f"the state after epoch {last['epoch']} of {last['epochs']}"
        elif self._json["stages"]:
            self._progress = f"the results up to stage {list(self._json['stages'])[-1]!r}"
