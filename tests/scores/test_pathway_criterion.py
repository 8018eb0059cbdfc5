"""The pathway criterion: mean over images of Σ_positions |a·∂y_c/∂a| per filter, checked by a per-image loop."""

import torch

from neurotomy.data import load_dataset
from neurotomy.models import build_model
from neurotomy.scores import get_criterion
from neurotomy.surgery.filters import prune_filters
from neurotomy.train import seed_everything


def test_pathway_criterion_equals_per_image_loop():
    data = load_dataset("digits")
    seed_everything(0)
    model = build_model("resnet20", 1, 10, 8).eval()
    scores = get_criterion("pathway")(model, data, max_images=6, batch_size=3, quiet=True)
    # the same 6 images (the criterion shuffles with the seed, 0): recompute image by image
    from neurotomy.data.batches import iterate_batches
    images = torch.cat([x for x, _ in iterate_batches(data, 3, shuffle=True, generator=torch.Generator().manual_seed(0),
                                                      max_images=6)])
    site = dict(model.named_modules())["layer1.0.bn1"]
    total = torch.zeros(16)
    for x in images:
        seen = []
        handle = site.register_forward_hook(lambda m, i, o: seen.append(o))
        logits = model(x[None])
        handle.remove()
        grad, = torch.autograd.grad(logits[0, logits.argmax()], seen[0])
        total += (seen[0] * grad).abs().sum((0, 2, 3)).detach()
    torch.testing.assert_close(scores["layer1.0.conv1"].float(), total / 6, rtol=1e-4, atol=1e-6)
    assert scores.criterion == "pathway" and set(scores) >= {"conv1", "layer3.2.conv2"}


def test_pathway_scores_drive_pruning():
    data = load_dataset("digits")
    seed_everything(0)
    model = build_model("resnet20", 1, 10, 8).eval()
    scores = get_criterion("pathway")(model, data, max_images=32, quiet=True)
    result = prune_filters(model, scores, ratio=0.5, input_shape=(1, 8, 8))
    assert result.model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert result.params_after < result.params_before
