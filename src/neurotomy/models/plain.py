"""The conv blocks of a plain network (no shortcut), found by following one forward pass.

A plain block is a size-keeping conv (+ a BatchNorm) + an activation whose output reaches the next
layer with weights — a dense conv, or the classifier after global pooling — through channel-wise
steps only (pooling, dropout, flattening a 1×1 map). Removing it hands its input to that successor
(:mod:`neurotomy.surgery.layers`). Where a model writes that in ``nn.Sequential`` containers of
bare modules (VGG's ``features``), the layout says it; but torchvision's ``Conv2dNormActivation``
wraps conv, norm and activation in a Sequential of their own, and a hand-written ``ConvBNReLU``
calls ``F.relu`` in its forward. So :func:`traced_plain_blocks` follows the tensors of one forward
pass on a blank input instead: which module's output goes into which call, by identity.

A block is named by the innermost module whose output is the activated tensor — the activation
module, or the wrapper that ends in an activation call — the layer a modularity curve reads. An
activation called in the forward of a module that goes on computing (the model's own:
``x = F.relu(self.bn2(self.conv2(x)))``, or a loop over an ``nn.ModuleList``) returns no module's
output; the block is then ``"<norm or conv>:activated"``
(:data:`~neurotomy.models.activations.ACTIVATED`), and only when the activation is idempotent
(ReLU, ReLU6, hardtanh: removing the conv and norm leaves it applied to the block's input, which
changes nothing when that input was itself activated).

Example:
    >>> from torchvision.ops import Conv2dNormActivation
    >>> net = nn.Sequential(Conv2dNormActivation(1, 8), Conv2dNormActivation(8, 8), nn.MaxPool2d(2),
    ...                     Conv2dNormActivation(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    >>> table = traced_plain_blocks(net, (1, 8, 8), "6")
    >>> [(name, b.conv, b.successor) for name, b in table.items()]
    [('1.2', '1.0', '3.0'), ('3.2', '3.0', '6')]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from neurotomy.models.activations import ACTIVATED, ACTIVATION_FUNCTIONS, IDEMPOTENT_ACTIVATIONS
from neurotomy.models.blank_pass import blank_pass, cached
from neurotomy.probe import Probe


@dataclass(frozen=True)
class PlainBlock:
    """A conv block of a plain network (no shortcut): ``conv`` (+ ``norm``) + an activation.

    It is named by its activation — the block's output, the layer a modularity curve probes — and
    ``successor`` is the next layer with weights that reads it (a conv, or the classifier after
    global pooling): removing the block changes what the successor sees, so the successor must be
    adapted (:mod:`neurotomy.surgery.layers`)."""

    name: str
    conv: str
    norm: str | None
    successor: str
    in_channels: int
    out_channels: int

    @property
    def changes_channels(self) -> bool:
        """The plain counterpart of a down-sampling block: its output is not shaped like its input."""
        return self.in_channels != self.out_channels


# modules that act on each channel alone and hold no weights: a block's output may pass them on
# the way to its successor (VGG's max-pools; global pooling and flattening before a classifier)
CHANNELWISE = (nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
               nn.Dropout, nn.Dropout2d)
# the calls those modules make, and their functional and tensor-method forms (global pooling as a
# mean, flattening as a view): channel-wise when they keep the batch and channel sizes
_CHANNELWISE_CALLS = frozenset({"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "dropout",
                                "dropout2d", "flatten", "view", "reshape", "mean", "amax", "squeeze"})


def keeps_size(conv: nn.Module) -> bool:
    """A dense conv whose output has its input's height and width (3×3, stride 1, padding 1)."""
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1 or conv.padding_mode != "zeros":
        return False
    kernel = conv.kernel_size
    same = conv.padding == "same" or conv.padding == tuple(k // 2 for k in kernel)
    return same and all(k % 2 for k in kernel) and conv.stride == (1, 1) and conv.dilation == (1, 1)


class _Calls(TorchFunctionMode):
    """Every torch call that returns a tensor, numbered, by the id of the tensor it read first: who
    consumed what, and when (an in-place activation returns the very tensor it read). Tensors are
    held until the pass ends, so no other tensor takes a recorded one's ``id``."""

    def __init__(self) -> None:
        super().__init__()
        self.step = 0
        self.readers: dict[int, list[tuple[int, object, torch.Tensor, torch.Tensor]]] = {}
        self.held: list = []
        self.running: list[str] = []  # the modules whose forward is under way (kept by the tracer's Probe)
        self.inside: dict[int, frozenset[str]] = {}  # step → the modules running when that call was made

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
            self.step += 1
            self.readers.setdefault(id(args[0]), []).append((self.step, func, args[0], out))
            self.held.append((args[0], out))
            self.inside[self.step] = frozenset(self.running)
        return out

    def only_reader(self, tensor: torch.Tensor, after: int):
        """The one call that read ``tensor`` after step ``after`` — (step, function, input, output) —
        or None when there were none or several. A call in place (``F.relu(x, inplace=True)``) may
        be followed by others: they read its result."""
        readers = [r for r in self.readers.get(id(tensor), []) if r[0] > after]
        if readers and (len(readers) == 1 or readers[0][3] is tensor):
            return readers[0]
        return None


def traced_plain_blocks(model: nn.Module, input_shape: tuple[int, ...],
                        classifier: str | None) -> dict[str, PlainBlock]:
    """The plain blocks of ``model`` in execution order, found in one forward pass on a blank input
    of ``input_shape`` (in eval mode; the caller's mode is restored). ``classifier``: the name of
    the final Linear, a successor when it reads exactly the block's channels. Remembered until the
    model's modules change (:func:`~neurotomy.models.blank_pass.cached`)."""
    return dict(cached(model, f"plain_blocks:{classifier}", input_shape,
                       lambda: _trace(model, tuple(input_shape), classifier)))


def _trace(model: nn.Module, input_shape: tuple[int, ...], classifier: str | None) -> dict[str, PlainBlock]:
    calls = _Calls()
    ran: list[tuple[int, str, nn.Module, torch.Tensor, torch.Tensor]] = []  # (step, name, module, input, output)

    def started(name: str, module: nn.Module, inputs: tuple) -> None:
        calls.running.append(name)

    def finished(name: str, module: nn.Module, inputs: tuple, output) -> None:
        calls.running.remove(name)
        if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
            ran.append((calls.step, name, module, inputs[0], output))
            calls.held.append((inputs[0], output))

    names = [name for name, _ in model.named_modules() if name]
    blank_pass(model, input_shape, Probe(model, names, on_module=finished, on_enter=started), calls)
    return _blocks(ran, calls, classifier)


def _blocks(ran: list, calls: _Calls, classifier: str | None) -> dict[str, PlainBlock]:
    table: dict[str, PlainBlock] = {}
    convs = [(step, name, module, out) for step, name, module, _, out in ran if isinstance(module, nn.Conv2d)]
    for step, name, conv, out in convs[1:]:  # the first conv reads the image: it is no block
        if not keeps_size(conv):
            continue
        reader = calls.only_reader(out, step)
        norm = _module_reading(ran, out, step, (nn.BatchNorm2d,))
        if norm is not None and reader is not None:  # through the BatchNorm, to what reads its output
            step, out = norm[0], norm[3]
            reader = calls.only_reader(out, step)
        if reader is None or reader[1] not in ACTIVATION_FUNCTIONS:
            continue
        act_step, activated = reader[0], reader[3]
        # the innermost module that made the call and returned its result: the first to finish after it
        # (not a module that merely passes it on, as a Dropout in eval mode does)
        named = next((n for s, n, _, _, o in ran if o is activated and s >= act_step and n in calls.inside[act_step]),
                     None)
        if named is None and reader[1] in IDEMPOTENT_ACTIVATIONS:  # called where no module returns it
            named = (norm[1] if norm else name) + ACTIVATED
        if named is None:
            continue
        successor = _successor(ran, calls, activated, act_step, classifier, conv.out_channels)
        if successor is not None:
            table[named] = PlainBlock(named, name, norm[1] if norm else None, successor, conv.in_channels,
                                      conv.out_channels)
    return table


def _module_reading(ran: list, tensor: torch.Tensor, after: int, kinds: tuple[type, ...]):
    """The first module of ``kinds`` that read ``tensor`` after step ``after``: (step finished, name, module, output)."""
    return next(((s, n, m, o) for s, n, m, x, o in ran if x is tensor and s > after and isinstance(m, kinds)), None)


def _successor(ran: list, calls: _Calls, tensor: torch.Tensor, step: int, classifier: str | None,
               channels: int) -> str | None:
    """The dense conv, or the classifier reading exactly ``channels`` features, that ``tensor``
    reaches through channel-wise calls alone, each the only reader of what it reads."""
    while True:
        reader = calls.only_reader(tensor, step)
        if reader is None:
            return None
        found = _module_reading(ran, tensor, step, (nn.Conv2d, nn.Linear))
        if found is not None:
            _, name, module, _ = found
            if isinstance(module, nn.Conv2d):
                return name if module.groups == 1 else None
            return name if name == classifier and module.in_features == channels else None
        step, func, before, after = reader
        if getattr(func, "__name__", "") not in _CHANNELWISE_CALLS or tuple(after.shape[:2]) != tuple(before.shape[:2]):
            return None  # not channel-wise, or a batch or channel dimension changed
        tensor = after


__all__ = ["CHANNELWISE", "PlainBlock", "keeps_size", "traced_plain_blocks"]
