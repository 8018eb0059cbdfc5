"""The one place that registers hooks on a model.

A :class:`Probe` attaches forward hooks (and, when asked, hooks on the gradient of the outputs) to
named modules and passes what they see to callbacks, which reduce it on the spot — so memory stays
bounded by one batch, never by the dataset. Hooks are removed on exit, even when an error escapes.
Forward hooks may also *replace* an output (return a tensor): that is how masks are applied; a
gradient callback may likewise return a replacement gradient (how :mod:`neurotomy.grad_mask`
filters back-propagation). A :class:`FunctionProbe` does the same for calls of torch functions
(``F.relu``) that a forward pass makes — what a model that calls its activations as functions has
instead of modules.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> shapes = {}
    >>> with Probe(model, ["0"], on_output=lambda name, out: shapes.update({name: tuple(out.shape)})):
    ...     _ = model(torch.zeros(1, 1, 5, 5))
    >>> shapes, len(model[0]._forward_hooks)
    ({'0': (1, 2, 3, 3)}, 0)
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from neurotomy.errors import ModelError

OutputCallback = Callable[[str, torch.Tensor], "torch.Tensor | None"]
GradCallback = Callable[[str, torch.Tensor, torch.Tensor], "torch.Tensor | None"]
ModuleCallback = Callable[[str, nn.Module, tuple, torch.Tensor], None]
EnterCallback = Callable[[str, nn.Module, tuple], None]


def resolve_layers(model: nn.Module, layers: Iterable[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    resolved = {}
    for name in layers:
        if name not in modules:
            raise ModelError(f"model has no layer {name!r}; see `neurotomy info` for layer names")
        resolved[name] = modules[name]
    return resolved


class Probe:
    """Context manager: hooks on ``layers`` while inside, none after.

    ``on_output(name, output)`` sees each forward output and may return a replacement;
    ``on_module(name, module, inputs, output)`` sees the module and its inputs too;
    ``on_grad(name, output, grad)`` sees the gradient of the loss w.r.t. that output and may
    return a replacement, which is what flows on to the layers below;
    ``on_enter(name, module, inputs)`` sees each call start (what runs inside it comes after).
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], on_output: OutputCallback | None = None,
                 on_grad: GradCallback | None = None, on_module: ModuleCallback | None = None,
                 on_enter: EnterCallback | None = None) -> None:
        self.modules = resolve_layers(model, layers)
        self.on_output, self.on_grad, self.on_module, self.on_enter = on_output, on_grad, on_module, on_enter
        self._handles: list = []

    def _forward_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor):
            if self.on_module is not None:
                self.on_module(name, module, inputs, output)
            if self.on_output is not None:
                replaced = self.on_output(name, output)
                if replaced is not None:
                    output = replaced
            if self.on_grad is not None and isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda grad, out=output.detach(): self.on_grad(name, out, grad))
            return output
        return hook

    def __enter__(self) -> "Probe":
        try:
            for name, module in self.modules.items():
                if self.on_enter is not None:
                    self._handles.append(module.register_forward_pre_hook(
                        lambda module, inputs, name=name: self.on_enter(name, module, inputs)))
                self._handles.append(module.register_forward_hook(self._forward_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class FunctionProbe(TorchFunctionMode):
    """Context manager: ``on_output(name, output)`` sees the tensor each call of one of ``functions``
    returns while inside (``name``: the function's ``__name__``) and may return a replacement, which
    is what the caller gets; with ``with_input``, ``on_output(name, output, input)`` sees the call's
    first argument too (for ``x.relu()``, ``x``). Every call counts, from module code too (``nn.ReLU`` calls ``F.relu``),
    but not the calls a seen function makes itself (``F.relu6`` calling ``hardtanh`` is one call).
    Calls made while one of the modules ``outside`` runs are not seen (an ``nn.ReLU`` a
    :class:`Probe` already watches). Only the returned tensor is replaced: code that ignores what an
    in-place call returns (``F.relu_(x)`` then ``x``) goes on with the unreplaced tensor. TorchScript
    is not seen.

    Example:
        >>> import torch.nn.functional as F
        >>> seen = []
        >>> with FunctionProbe([F.relu], on_output=lambda name, out: seen.append(name) or out * 0):
        ...     y = F.relu(torch.ones(2))
        >>> seen, y.tolist()
        (['relu'], [0.0, 0.0])
    """

    def __init__(self, functions: Iterable[Callable], on_output: OutputCallback,
                 outside: Iterable[nn.Module] = (), with_input: bool = False) -> None:
        super().__init__()
        self.names = {f: getattr(f, "__name__", repr(f)) for f in functions}
        self.on_output = on_output
        self.with_input = with_input  # on_output(name, output, input): the call's first argument too
        self.outside = list(outside)
        self._inside = 0  # how many of the ``outside`` modules are running now
        self._handles: list = []

    def __enter__(self) -> "FunctionProbe":
        def enter(module, inputs):
            self._inside += 1

        def leave(module, inputs, output):
            self._inside -= 1

        try:
            for module in self.outside:
                self._handles.append(module.register_forward_pre_hook(enter))
                self._handles.append(module.register_forward_hook(leave, always_call=True))
        except BaseException:
            self._remove()
            raise
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        self._remove()
        super().__exit__(*exc)

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._inside = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))  # the mode is off inside: nested calls are not seen
        name = self.names.get(func)
        if name is not None and not self._inside and isinstance(out, torch.Tensor):
            first = args[0] if args else (kwargs or {}).get("input")
            replaced = self.on_output(name, out, first) if self.with_input else self.on_output(name, out)
            if replaced is not None:
                out = replaced
        return out


def leaf_modules(model: nn.Module) -> list[str]:
    """Names of modules without children (the layers a table lists)."""
    return [name for name, m in model.named_modules() if name and not list(m.children())]
