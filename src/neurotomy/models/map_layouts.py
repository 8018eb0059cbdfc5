"""The layout of a layer's 4-D output map: channels-first (N × C × h × w, a conv) or channels-last
(N × h × w × C: timm's Swin, ConvNeXt blocks), read from the modules of a forward pass.

The subspace scores, CRP, the CAMs and the projection surgery all need it, so it lives on the models
floor, below them all.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(3, 2))
    >>> layouts = MapLayouts()
    >>> with torch.no_grad(), layouts.watch(model):
    ...     _ = model(torch.zeros(1, 1, 5, 5))
    >>> layouts.layout("0"), layouts.layout("1")
    ('channels_first', 'channels_last')
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurotomy.probe import Probe

# Channels-last maps. A 4-D output is read as N × C × h × w unless the module computed it over its LAST
# axis: timm's Swin keeps N × h × w × C from its patch embedding to its final ``norm`` (no channels-first map
# after the stem at all, so "prefer the last channels-first map" would fall back to the first conv), and
# ConvNeXt blocks permute to N × h × w × C around their LayerNorm and MLP. We decide from what the module
# does, not from the sizes (h, w and C can be equal): an ``nn.Linear`` always maps the last axis; an
# ``nn.LayerNorm`` over ``(last dim,)`` does too, checked numerically because subclasses such as timm's
# ``LayerNorm2d`` permute inside and normalise the channel axis of an N × C × h × w map; convolutions and
# batch/group norms are channels-first. Any other module (a block, a stage, dropout, an activation) takes the
# layout of the most recent such output of the same shape — a block's own last norm/projection, or the map
# it passes through — and is channels-first when there is none (a CNN: nothing to look up).
CHANNELS_FIRST_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm,
                          nn.InstanceNorm2d, nn.LocalResponseNorm)


def computes_over_last_axis(module: nn.Module, inputs: tuple, output: torch.Tensor) -> bool | None:
    """Whether ``module`` produced its 4-D ``output`` over the last axis (channels-last: True), over axis 1
    (False), or cannot tell from the module alone (None).

    Example:
        >>> x = torch.randn(1, 3, 3, 8)
        >>> computes_over_last_axis(nn.LayerNorm(8), (x,), nn.LayerNorm(8)(x))
        True
    """
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.LayerNorm):
        x = inputs[0] if inputs else None
        if tuple(module.normalized_shape) != (output.shape[-1],) or not isinstance(x, torch.Tensor) \
                or x.shape != output.shape:
            return None  # normalises several axes together: layout-neutral
        with torch.no_grad():  # one row of one image tells the two readings apart, at no cost
            expected = F.layer_norm(x[:1, :1], module.normalized_shape, module.weight, module.bias, module.eps)
        return bool(torch.allclose(expected.float(), output[:1, :1].detach().float(), rtol=1e-3, atol=1e-3))
    if isinstance(module, CHANNELS_FIRST_MODULES):
        return False
    return None


class MapLayouts:
    """A :class:`~neurotomy.probe.Probe` ``on_module`` callback over every module of a forward pass:
    ``channels_last[name]`` says whether that module's 4-D output is N × h × w × C (see the rule above).
    :meth:`watch` is that probe; a layer's layout is known once the forward pass has run past it (in a
    gradient callback, always).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(3, 2), nn.GELU())
        >>> layouts = MapLayouts()
        >>> with torch.no_grad(), layouts.watch(model):
        ...     _ = model(torch.zeros(1, 1, 5, 5))
        >>> layouts.channels_last, layouts.layout("3")
        ({'0': False, '1': False, '2': True, '3': True}, 'channels_last')
    """

    def __init__(self) -> None:
        self.channels_last: dict[str, bool] = {}
        self._latest: dict[tuple[int, ...], bool] = {}  # shape → layout of its most recent known output

    def __call__(self, name: str, module: nn.Module, inputs: tuple, output) -> None:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            return
        shape = tuple(output.shape)
        known = computes_over_last_axis(module, inputs, output)
        if known is None:
            known = self._latest.get(shape, False)
        else:
            self._latest[shape] = known
        self.channels_last.setdefault(name, known)  # a module called twice: its first call, as observed

    def watch(self, model: nn.Module) -> Probe:
        """A probe on every module of ``model`` feeding this callback (the layout of any module needs the
        modules that ran before it)."""
        return Probe(model, [name for name, _ in model.named_modules() if name], on_module=self)

    def layout(self, name: str) -> str:
        """``channels_last`` or ``channels_first`` for a 4-D output of ``name`` (channels-first if not seen)."""
        return "channels_last" if self.channels_last.get(name, False) else "channels_first"


__all__ = ["CHANNELS_FIRST_MODULES", "MapLayouts", "computes_over_last_axis"]
