import pytest
import torch
from torch.utils.data import Dataset, get_worker_info

from neurotomy.cli import main
from neurotomy.data import batches
from neurotomy.data.batches import batch_sizes, iterate_batches, select_shard, set_default_workers, shard_rows


class WhoReadMe(Dataset):
    """Not in memory (goes through a DataLoader); each label says which worker process read it."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        info = get_worker_info()
        return torch.full((1, 2, 2), float(i)), -1 if info is None else info.id


@pytest.fixture
def restore_workers():
    yield
    set_default_workers(0)


def test_workers_read_the_same_batches_in_worker_processes(restore_workers):
    alone = list(iterate_batches(WhoReadMe(), 4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    set_default_workers(2)
    helped = list(iterate_batches(WhoReadMe(), 4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [x.tolist() for x, _ in alone] == [x.tolist() for x, _ in helped]
    assert all((y == -1).all() for _, y in alone)
    assert {int(w) for _, y in helped for w in y} == {0, 1}  # both workers read images


def test_cli_workers_flag_sets_the_default(restore_workers):
    assert main(["evaluate", "zoo:lenet5-digits", "--max-images", "32", "--workers", "1", "--quiet"]) == 0
    assert batches._defaults["workers"] == 1
    assert main(["evaluate", "zoo:lenet5-digits", "--workers", "-1"]) == 2  # argparse's status, returned
    with pytest.raises(ValueError):
        set_default_workers(-1)


def test_shards_partition_every_batch():
    for n in range(1, 12):
        for count in (1, 2, 3):
            rows = [shard_rows(n, i, count) for i in range(count)]
            assert [i for r in rows for i in range(n)[r]] == list(range(n))
            assert max(r.stop - r.start for r in rows) - min(r.stop - r.start for r in rows) <= 1
    global_batches = [torch.arange(0, 5), torch.arange(5, 10), torch.arange(10, 11)]
    assert [b.tolist() for b in select_shard(global_batches, (1, 2))] == [[5, 6, 7, 8, 9]]
    # split: each batch's rows; the 1-image batch cannot be split between 2 processes
    assert [b.tolist() for b in select_shard(global_batches, (1, 2), split_batches=True)] == [[3, 4], [8, 9]]
    assert batch_sizes(WhoReadMe(), 4) == [4, 4, 2]


def test_sharded_passes_together_read_the_unsharded_pass():
    data = WhoReadMe()
    whole = list(iterate_batches(data, 3, shuffle=True, generator=torch.Generator().manual_seed(1)))
    parts = [list(iterate_batches(data, 3, shuffle=True, generator=torch.Generator().manual_seed(1),
                                  shard=(i, 2), split_batches=True)) for i in range(2)]
    for k, (x, _) in enumerate(whole):
        if len(x) >= 2:
            assert torch.equal(torch.cat([parts[0][k][0], parts[1][k][0]]), x)
