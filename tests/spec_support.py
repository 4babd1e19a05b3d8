"""The tiny model, data and space that tests/test_spec*.py search, and the Python door's
ConfigError for given arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bitscout
from bitscout.errors import ConfigError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def data(rows: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(rows, 8, generator=gen), torch.randint(0, 3, (rows,), generator=gen)


def space(widths: list[int]) -> dict:
    layer = {"name": ["integer"], "data_in_width": widths, "weight_width": widths,
             "bias_width": [8]}  # fmt: skip
    return {"setup": {"by": "name"},
            "seed": {"default": {"config": {"name": ["NA"]}}, "fc1": {"config": layer}}}  # fmt: skip


SPACE = space([4, 8])  # 4 candidates
MODEL = Tiny()


def python_error(**kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        bitscout.search(MODEL, data(), SPACE, **kwargs)
    return caught.value
