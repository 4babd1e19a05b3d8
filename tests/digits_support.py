"""The small digits MLP that the search tests (greedy, warm starts, ILP) train and search."""

import torch
from torch import nn


def digits_mlp() -> nn.Sequential:
    """Linear(64, 24), ReLU, Linear(24, 10), untrained."""
    return nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))


def trained_digits_mlp() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """`digits_mlp` trained (seed 0, 150 full-batch Adam steps) on digits' first 400 rows,
    in eval mode, with those rows."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[:400] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[:400])
    torch.manual_seed(0)
    model = digits_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), (x, y)
