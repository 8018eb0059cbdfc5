"""How alike two batches of maps are: Spearman rank correlation, SSIM and top-k overlap (IoU),
one number per image pair — the similarity measures of Adebayo et al. 2018 §3 (sanity checks) and
of our same-reasons check.

Example:
    >>> import torch
    >>> a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    >>> spearman(a, a * 10).tolist(), spearman(a, -a).tolist()
    ([1.0], [-1.0])
    >>> top_iou(a, a, top=0.5).tolist()
    [1.0]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neurotomy.explain.metrics.checks import MetricError, check_fraction, top_pixel_mask


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.dim() < 2:
        raise MetricError(f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be compared; "
                          "give two batches B×H×W of the same shape")
    return a.detach().double().flatten(1), b.detach().double().flatten(1)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1 … n) along the last axis of a ``B × n`` tensor, ties sharing their mean rank — the
    convention of ``scipy.stats.rankdata`` that Spearman's coefficient needs (saliency maps have
    many ties, e.g. the zero gradients behind a ReLU)."""
    rows, n = values.shape
    sorted_values, order = torch.sort(values, dim=1, stable=True)
    new_group = torch.ones_like(sorted_values, dtype=torch.bool)
    new_group[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    group = new_group.long().cumsum(1) - 1 + torch.arange(rows, device=values.device)[:, None] * n
    positions = torch.arange(1, n + 1, dtype=torch.float64, device=values.device).expand(rows, n)
    total = torch.zeros(rows * n, dtype=torch.float64, device=values.device)
    total.index_add_(0, group.flatten(), positions.flatten())
    count = torch.bincount(group.flatten(), minlength=rows * n).double()
    mean_rank = (total / count.clamp(min=1))[group]
    ranks = torch.empty_like(mean_rank)
    ranks.scatter_(1, order, mean_rank)
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row of two ``B × n`` tensors. Where a row is constant the coefficient
    is undefined (NaN in scipy, which would poison every average): a flat map against a varied one
    counts 0 (no shared ranking), two flat maps count 1 (they are the same ranking)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    var_a, var_b = a.pow(2).sum(1), b.pow(2).sum(1)
    denominator = (var_a * var_b).sqrt()
    undefined = torch.where((var_a == 0) & (var_b == 0), torch.ones_like(var_a), torch.zeros_like(var_a))
    return torch.where(denominator > 0, (a * b).sum(1) / denominator.clamp(min=1e-300), undefined)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between each pair of maps (length B), ties averaged."""
    a, b = _check_pair(a, b)
    return pearson(average_ranks(a), average_ranks(b)).float()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float | None = None, win_size: int = 7) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) per image pair of ``B × H × W`` maps.

    Follows ``skimage.metrics.structural_similarity`` defaults: a uniform ``win_size`` window,
    K1 = 0.01, K2 = 0.03, sample covariances (N − 1), averaged over the windows that fit inside the
    image. ``data_range=None`` takes the range of each pair's values (max − min over both maps).
    """
    if a.shape != b.shape or a.dim() != 3:
        raise MetricError(f"SSIM compares two batches B×H×W of the same shape, got {tuple(a.shape)} "
                          f"and {tuple(b.shape)}")
    if win_size < 1 or win_size % 2 == 0 or win_size > min(a.shape[1:]):
        raise MetricError(f"SSIM window {win_size} must be odd and fit the {a.shape[1]}×{a.shape[2]} maps")
    x, y = a.detach().double()[:, None], b.detach().double()[:, None]
    if data_range is None:
        both = torch.cat([x.flatten(1), y.flatten(1)], 1)
        value_range = (both.amax(1) - both.amin(1)).view(-1, 1, 1, 1)
    else:
        value_range = torch.full((len(x), 1, 1, 1), float(data_range), dtype=torch.float64, device=x.device)
    c1, c2 = (0.01 * value_range) ** 2, (0.03 * value_range) ** 2
    samples = win_size * win_size
    correction = samples / (samples - 1) if samples > 1 else 1.0

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, win_size, stride=1)

    mx, my = mean(x), mean(y)
    vx = correction * (mean(x * x) - mx * mx)
    vy = correction * (mean(y * y) - my * my)
    cov = correction * (mean(x * y) - mx * my)
    index = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    # Two identical constant maps give 0/0 when the range is 0; they are identical, so 1.
    index = torch.where(torch.isnan(index), torch.ones_like(index), index)
    return index.flatten(1).mean(1).float()


def top_iou(a: torch.Tensor, b: torch.Tensor, top: float = 0.1) -> torch.Tensor:
    """Intersection over union of each pair's ``top`` fraction of highest-valued pixels (length B)."""
    top = check_fraction(top, "top")
    if a.shape != b.shape or a.dim() < 2:
        raise MetricError(f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be compared; "
                          "give two batches B×H×W of the same shape")
    count = max(1, int(round(top * a[0].numel())))
    mask_a, mask_b = top_pixel_mask(a.detach(), count), top_pixel_mask(b.detach(), count)
    inter = (mask_a & mask_b).flatten(1).sum(1).double()
    union = (mask_a | mask_b).flatten(1).sum(1).double()
    return (inter / union).float()
