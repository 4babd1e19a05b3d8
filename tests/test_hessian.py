"""Hutchinson's Hessian trace on models whose attention PyTorch runs through fused kernels."""

import pytest
import torch
from torch import nn

from bitscout.data.containers import prepare
from bitscout.evaluate.hessian import hessian_traces


class Attention(nn.Module):
    """A token classifier: an embedding, one attention block, a linear head."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.block = layer
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.view(len(x), 3, 4))
        h = self.block(h, h, h, need_weights=False)[0] if self.is_mha else self.block(h)
        return self.head(h.mean(dim=1))

    @property
    def is_mha(self) -> bool:
        return isinstance(self.block, nn.MultiheadAttention)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 12, generator=g), torch.randint(0, 3, (32,), generator=g)


def _exact_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The Hessian of the head's weights formed in full, under the math kernel."""
    w0 = model.head.weight.detach().clone()

    def loss(w: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(model, {"head.weight": w}, (x,))
        return nn.functional.cross_entropy(out, y)

    hessian = torch.autograd.functional.hessian(loss, w0).reshape(w0.numel(), -1)
    return float(hessian.diagonal().sum())


@pytest.mark.parametrize(
    "layer",
    [
        lambda: nn.MultiheadAttention(8, 2, batch_first=True),
        lambda: nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True),
    ],
    ids=["multihead", "encoder_layer"],
)
def test_traces_through_attention(layer) -> None:
    """Double backward through the fused scaled-dot-product kernels raised before; the probe
    now runs under the math kernel, and the head's trace matches the Hessian formed in full."""
    torch.manual_seed(0)
    model = Attention(layer()).eval()
    x, y = _data()
    groups = {"embed": ["embed"], "head": ["head"]}
    found = hessian_traces(model, prepare((x, y)), groups, 3000, seed=0)
    assert set(found) == {"embed", "head"}
    assert found["embed"].trace == found["embed"].trace  # finite, not NaN
    assert found["head"].trace == pytest.approx(_exact_trace(model, x, y), rel=0.1)
    assert torch.backends.mha.get_fastpath_enabled()  # restored afterwards
