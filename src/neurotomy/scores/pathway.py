"""Pathway relevance as a pruning criterion: the mean over images of each filter's per-input
critical-pathway score (Khakzar et al., CVPR 2021; see :mod:`neurotomy.explain.pathway`).

Per image, a filter's score is Σ_positions |a · ∂y_c/∂a| at its response, for the image's predicted
class c — the quantity the pathway explanation thresholds, summed per channel. It differs from
Taylor (Molchanov et al.) in differentiating the predicted logit rather than the loss, and in summing
magnitudes over positions rather than taking the magnitude of the mean. The per-input scores
themselves (``axis="input"``) come from :func:`neurotomy.explain.pathway.pathway_channel_scores`.
"""

from __future__ import annotations

import torch

from neurotomy.data.batches import iterate_batches, num_batches
from neurotomy.errors import NeurotomyError
from neurotomy.progress import add_task, progress_bar
from neurotomy.scores.base import Criterion


class PathwayRelevance(Criterion):
    name = "pathway"
    paper = "Khakzar et al., CVPR 2021 (critical-pathway relevance Σ|a·∂y_c/∂a| per filter, mean over images)"
    needs_data = True
    default_images = 640

    def compute(self, model, units, data, *, batch_size, max_images, seed, quiet) -> dict[str, torch.Tensor]:
        from neurotomy.explain.pathway import pathway_channel_scores

        if data is None:
            raise NeurotomyError("criterion 'pathway' needs data; pass --data NAME")
        max_images = max_images or self.default_images
        totals: dict[str, torch.Tensor] = {}
        count = 0
        generator = torch.Generator().manual_seed(seed)
        with progress_bar(quiet) as bar:
            task = add_task(bar, "score pathway", num_batches(data, batch_size, max_images))
            for images, _ in iterate_batches(data, batch_size, shuffle=True, generator=generator,
                                             max_images=max_images):
                with torch.no_grad():
                    predicted = model(images).argmax(1)
                per_input = pathway_channel_scores(model, images, predicted)
                for layer, scores in per_input.items():
                    totals[layer] = totals.get(layer, 0) + scores.sum(0)
                count += len(images)
                bar.advance(task)
        return {u.conv_name: totals[u.conv_name] / count for u in units if u.conv_name in totals}
