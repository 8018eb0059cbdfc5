"""A user's own model file: a reused ReLU, a residual add and a concatenation (issue 20)."""

import pytest

USER_NET = '''
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


def not_a_model():
    return 42


CONSTANT = 3
'''


@pytest.fixture
def user_net(tmp_path):
    """Path of a fresh copy of the user-model file."""
    path = tmp_path / "user_net.py"
    path.write_text(USER_NET)
    return path
