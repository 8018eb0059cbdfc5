"""Light batched augmentation: random crop with zero padding, and horizontal flip.

Applied to a whole batch with one generator, so a seed fixes every crop and flip. Padding uses the
normalised value of a black pixel, so padded borders look like the dataset's background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 2,
                     flip: bool = True, fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> random_crop_flip(torch.zeros(4, 1, 8, 8), g).shape
        torch.Size([4, 1, 8, 8])
    """
    n, c, h, w = images.shape
    fill_t = torch.as_tensor(fill, dtype=images.dtype).reshape(1, -1, 1, 1)
    padded = F.pad(images - fill_t, (padding,) * 4) + fill_t
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    # Gather each image's crop with one advanced-indexing call instead of a Python loop.
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, c, h, w)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, c, h, w)
    batch = torch.arange(n).view(n, 1, 1, 1).expand(n, c, h, w)
    chan = torch.arange(c).view(1, c, 1, 1).expand(n, c, h, w)
    out = padded[batch, chan, rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(-1), out)
    return out
