"""Light batched augmentation: random crop with zero padding, and horizontal flip.

Applied to a whole batch with one generator, so a seed fixes every crop and flip. Padding uses the
normalised value of a black pixel, so padded borders look like the dataset's background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 2,
                     flip: bool = True, fill: float | torch.Tensor = 0.0,
                     part: tuple[slice, int] | None = None) -> torch.Tensor:
    """Crop (and flip) every image of the batch at random.

    ``part=(rows, n)``: ``images`` are rows ``rows`` of a batch of ``n`` (one process's shard in
    data-parallel training); the draws are made for all ``n`` images and the shard keeps its own,
    so every process consumes the generator exactly as a single process does.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> random_crop_flip(torch.zeros(4, 1, 8, 8), g).shape
        torch.Size([4, 1, 8, 8])
    """
    n, c, h, w = images.shape
    mine, drawn = part if part is not None else (slice(None), n)
    fill_t = torch.as_tensor(fill, dtype=images.dtype).reshape(1, -1, 1, 1)
    padded = F.pad(images - fill_t, (padding,) * 4) + fill_t
    dy = torch.randint(0, 2 * padding + 1, (drawn,), generator=generator)[mine]
    dx = torch.randint(0, 2 * padding + 1, (drawn,), generator=generator)[mine]
    # Gather each image's crop with one advanced-indexing call instead of a Python loop.
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, c, h, w)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, c, h, w)
    batch = torch.arange(n).view(n, 1, 1, 1).expand(n, c, h, w)
    chan = torch.arange(c).view(1, c, 1, 1).expand(n, c, h, w)
    out = padded[batch, chan, rows, cols]
    if flip:
        mask = (torch.rand(drawn, generator=generator) < 0.5)[mine]
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(-1), out)
    return out
