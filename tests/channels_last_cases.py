"""Models whose 4-D maps are channels-last (N × H × W × C, as in timm's Swin and ConvNeXt blocks) and their
channels-first twins: the same computation, with the map at one layer handed on permuted to N × C × H × W by
a module of its own — the reading every channels-last code path must agree with (shared by the subspace,
CRP and projection tests)."""

import copy

import pytest
import torch
from torch import nn

from neurotomy.models.anatomy import set_submodule


class TinyChannelsLast(nn.Module):
    """A conv stem, then channels-last as in Swin: Linear → LayerNorm → GELU on N × h × w × C, average
    pooling, a linear head. On a 12 × 20 image the map is N × 6 × 10 × 8: h, w and C all differ, so axis 1
    (6) taken as the channels is visibly wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.proj, self.norm, self.act, self.head = nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The output of ``act``, N × 6 × 10 × 8: the model split by hand there (no hooks)."""
        return self.act(self.norm(self.proj(self.stem(x).permute(0, 2, 3, 1))))

    def rest(self, a: torch.Tensor) -> torch.Tensor:
        return self.head(a.mean((1, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.features(x))


class ToChannelsFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class ToChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


def channels_first_twin(model: nn.Module, layer: str) -> tuple[nn.Module, str]:
    """A copy of ``model`` computing the same logits, where ``layer`` is followed by a module that outputs its
    map channels-first (``f"{layer}.1"``) and one that permutes it back; returns (twin, that module's name)."""
    twin = copy.deepcopy(model)
    set_submodule(twin, layer, nn.Sequential(twin.get_submodule(layer), ToChannelsFirst(), ToChannelsLast()))
    return twin.eval(), f"{layer}.1"


def tiny_timm_swin() -> nn.Module:
    """timm's Swin at 64 px, random init, narrow (width 32, two blocks a stage, windows of 2): N × h × w × C
    from the patch embedding to the final ``norm`` (``layers.2`` outputs N × 4 × 4 × 128)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=2,
                             num_classes=4, depths=(2, 2, 2, 2), embed_dim=32, num_heads=(2, 2, 4, 4)).eval()


def images(n: int, shape: tuple[int, ...], seed: int = 1, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
