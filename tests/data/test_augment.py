import torch

from neurotomy.data.augment import random_crop_flip
from neurotomy.data.batches import shard_rows


def test_shards_augmented_apart_equal_the_batch_augmented_whole():
    images = torch.randn(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    whole = random_crop_flip(images, torch.Generator().manual_seed(3), padding=2, fill=-0.5)
    parts = []
    for index in range(2):
        rows = shard_rows(len(images), index, 2)
        parts.append(random_crop_flip(images[rows], torch.Generator().manual_seed(3), padding=2, fill=-0.5,
                                      part=(rows, len(images))))
    assert torch.equal(torch.cat(parts), whole)
    assert not torch.equal(whole, images)  # something was cropped or flipped
    # drawing for the shard alone would not reproduce it
    alone = random_crop_flip(images[shard_rows(7, 1, 2)], torch.Generator().manual_seed(3), padding=2, fill=-0.5)
    assert not torch.equal(alone, parts[1])
