"""Property test: random small conv nets with residual and concat branches survive any criterion
at any ratio, with the expected channel counts, and round-trip through save/load."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from neurotomy.checkpoint import ModelMeta, save_checkpoint
from neurotomy.loading import load_checkpoint
from neurotomy.data.tensor_dataset import Normalization, TensorImageDataset
from neurotomy.models import register_model
from neurotomy.scores import CRITERIA, get_criterion
from neurotomy.surgery.filters import prune_filters


class Block(nn.Module):
    """conv-bn-relu, optionally with a residual add or a concatenated side branch."""

    def __init__(self, cin: int, width: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(cin, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        if kind == "concat":
            self.side = nn.Conv2d(cin, width, 1)
        self.out_channels = width * 2 if kind == "concat" else (cin if kind == "residual" else width)
        if kind == "residual":
            self.conv = nn.Conv2d(cin, cin, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(cin)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        if self.kind == "residual":
            return x + y
        if self.kind == "concat":
            return torch.cat([y, torch.relu(self.side(x))], 1)
        return y


class RandomNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=3, input_size=8, widths=(4,), kinds=("plain",)):
        super().__init__()
        blocks, c = [nn.Conv2d(in_channels, widths[0], 3, padding=1)], widths[0]
        for width, kind in zip(widths, kinds):
            blocks.append(Block(c, width, kind))
            c = blocks[-1].out_channels
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


register_model("test-randomnet")(RandomNet)  # so checkpoints can rebuild it

DATA = TensorImageDataset(torch.randn(12, 1, 8, 8), torch.arange(12) % 3, ["a", "b", "c"],
                          Normalization((0.0,), (1.0,)))
FAST = [n for n in sorted(CRITERIA.names(axis="unit")) if n != "chip"] + ["chip"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(widths=st.lists(st.integers(2, 8), min_size=1, max_size=4),
       kinds=st.lists(st.sampled_from(["plain", "residual", "concat"]), min_size=4, max_size=4),
       criterion=st.sampled_from(FAST), ratio=st.floats(0.0, 0.9), scope=st.sampled_from(["uniform", "global"]),
       seed=st.integers(0, 1000))
def test_any_criterion_any_ratio(tmp_path_factory, widths, kinds, criterion, ratio, scope, seed):
    args = {"in_channels": 1, "num_classes": 3, "input_size": 8, "widths": widths,
            "kinds": kinds[:len(widths)]}
    torch.manual_seed(seed)
    model = RandomNet(**args).eval()
    model.neurotomy_meta = ModelMeta("test-randomnet", args)
    scores = get_criterion(criterion)(model, DATA, seed=seed, batch_size=6, quiet=True)
    result = prune_filters(model, scores, ratio=ratio, scope=scope)
    pruned = result.model.eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert pruned(x).shape == (2, 3)
    # expected channel counts: each cut group shrank by exactly its number of cut indices
    modules = dict(pruned.named_modules())
    for cut in result.cuts:
        before, after = result.channels[cut.layer]
        assert after == before - len(cut.idxs) >= 1
        root = modules[cut.layer]
        assert (root.out_channels if isinstance(root, nn.Conv2d) else root.out_features) == after
    if scope == "uniform":
        some_branch_at_minimum = any(isinstance(m, nn.Conv2d) and m.out_channels == 1 for m in modules.values())
        for before, after in result.channels.values():
            expected = max(1, before - int(ratio * before + 1e-9))
            # more may survive only when a concatenated branch would otherwise lose its last channel
            assert after == expected or (after > expected and some_branch_at_minimum)
    path = save_checkpoint(pruned, pruned.neurotomy_meta, tmp_path_factory.mktemp("ck") / "m")
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path)(x), pruned(x), atol=0, rtol=0)
