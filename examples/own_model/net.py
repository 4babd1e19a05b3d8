"""A model and data of your own, for `bitscout search own_model.toml` and `search_own.py`.

The model is not one of bitscout's: a residual MLP whose blocks normalise with LayerNorm and
activate with GELU. The data is scikit-learn's bundled 8x8 digits, scaled to [0, 1] and split
here once, with a fixed seed, exactly as this user wants it (bitscout does not re-scale it).
"""

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


class Block(nn.Module):
    """x + fc2(gelu(fc1(norm(x)))): a pre-norm residual block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ResidualMLP(nn.Module):
    def __init__(self, inputs: int, width: int, blocks: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(inputs, width)
        self.blocks = nn.Sequential(*(Block(width) for _ in range(blocks)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))))


def build(width: int = 32, blocks: int = 2) -> nn.Module:
    """The float model, freshly initialised (bitscout seeds torch before calling this)."""
    return ResidualMLP(inputs=64, width=width, blocks=blocks, classes=10)


def load(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Digits as (x, y) pairs: 60% train, 20% val, 20% test, stratified."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.25, stratify=y_rest, random_state=seed
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
