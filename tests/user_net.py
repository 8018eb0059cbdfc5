"""A user's own model file: a reused ReLU, a residual add and a concatenation (issue 20).

The one copy of this source: the tests (tests/conftest.py ``user_net``) and
benchmarks/model_matrix.py copy the file and load it by path, as a user's file is loaded
(``path/to/user_net.py:make``). ``make`` takes no ``in_channels`` on purpose (the loader passes only
the options a factory accepts); ``UserNet`` itself takes it."""

import torch
from torch import nn


class UserNet(nn.Module):
    """One ReLU module used four times, a residual add and a channel concatenation."""

    def __init__(self, in_channels=1, num_classes=10, width=32):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv_a = nn.Conv2d(width, width, 3, padding=1)
        self.conv_b = nn.Conv2d(width, 24, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(width + 24, num_classes)

    def forward(self, x):
        x = self.relu(self.bn(self.stem(x)))
        x = self.relu(self.conv_a(x)) + x
        x = torch.cat([x, self.relu(self.conv_b(x))], 1)
        return self.head(self.relu(x).mean((2, 3)))


def make(num_classes=10):
    return UserNet(num_classes=num_classes)


# not models: the loader's error messages are tested on these (tests/loading/test_specs.py)
def not_a_model():
    return 42


CONSTANT = 3
