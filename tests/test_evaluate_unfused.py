"""Quantized layers that really run (issue 20, item 1).

In eval mode under no-grad, PyTorch's fused fast path of `nn.TransformerEncoderLayer` reads
`linear1.weight` and `linear2.weight` directly and never calls the quantized wrapper put in
their place: every candidate scored the float model's metrics. The reference here is the
encoder layer written out by hand, with weights quantized by the NumPy fixed-point reference.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from fixed_point_ref import ref_quantize
from torch import nn

from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import Evaluator, evaluate_model
from bitscout.evaluate.unfused import unfused
from bitscout.quant.space import SearchSpace

WIDTHS = [1, 2, 16]


class Tiny(nn.Module):
    """A token embedding, one Transformer encoder layer (the fused path's conditions all
    met: batch_first, an even head count, relu), mean pooling and a classifier head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.embed(x)).mean(dim=1))


def _data(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(400, 5, 4, generator=gen)
    with torch.no_grad():
        y = (model(x) + 0.3 * torch.randn(400, 3, generator=gen)).argmax(dim=1)
    return x, y


def _space(model: nn.Module) -> SearchSpace:
    tables = {
        "default": {"name": ["NA"]},
        "enc.linear1": {"name": ["integer"], "weight_width": WIDTHS},
        "enc.linear2": {"name": ["integer"], "weight_width": WIDTHS},
    }
    return SearchSpace(model, "name", tables)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = Tiny().eval()
    return model, *_data(model)


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _by_hand(model: Tiny, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The logits of `model` with linear1/linear2's weights replaced, each operation written
    out: attention, residual, post-norm, the feed-forward block, pooling and the head."""
    enc, attn = model.enc, model.enc.self_attn
    h = x @ model.embed.weight.T + model.embed.bias
    n, s, d = h.shape
    heads = attn.num_heads
    q, k, v = (h @ attn.in_proj_weight.T + attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(n, s, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    a = (weights @ v).transpose(1, 2).reshape(n, s, d)
    h = _layer_norm(h + a @ attn.out_proj.weight.T + attn.out_proj.bias, enc.norm1)
    ff = torch.relu(h @ w1.T + enc.linear1.bias) @ w2.T + enc.linear2.bias
    h = _layer_norm(h + ff, enc.norm2)
    return h.mean(dim=1) @ model.head.weight.T + model.head.bias


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == y).sum().item() / len(y)


def _quantized(weight: torch.Tensor, width: int) -> torch.Tensor:
    return torch.from_numpy(ref_quantize(weight.detach().numpy(), width, None)).float()


def test_every_candidate_scores_the_encoder_it_quantizes(tiny):
    model, x, y = tiny
    space = _space(model)
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "loss"])
    floats = evaluator.baseline()
    differ = 0
    with torch.no_grad():
        for i in range(space.size):
            config = space.config(i)
            w1, w2 = (
                _quantized(getattr(model.enc, name).weight, config[f"enc_{name}/weight_width"])
                for name in ("linear1", "linear2")
            )
            logits = _by_hand(model, x, w1, w2)
            got, _ = evaluator.evaluate(config)
            assert got["accuracy"] == _accuracy(logits, y), config
            want_loss = F.cross_entropy(logits, y).item()
            assert got["loss"] == pytest.approx(want_loss, rel=1e-5), config
            differ += got != floats
    assert differ >= space.size - 1  # the all-16-bit candidate may round to float's figures


def test_sensitivity_probes_and_evaluate_model_run_the_wrappers(tiny):
    model, x, y = tiny
    space = _space(model)
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "loss"])
    one_bit = space.resolved(space.config(0))  # both layers at 1 bit
    assert evaluator.evaluate_plan(one_bit) != evaluator.baseline()
    from bitscout.quant import quantize_model

    with torch.no_grad():
        w1, w2 = (_quantized(m.weight, 1) for m in (model.enc.linear1, model.enc.linear2))
        logits = _by_hand(model, x, w1, w2)
    got = evaluate_model(quantize_model(model, space.plan(space.config(0))), x, y)
    assert got["accuracy"] == _accuracy(logits, y)


def test_pytorchs_fast_path_setting_is_restored(tiny):
    model, x, y = tiny
    assert torch.backends.mha.get_fastpath_enabled()
    Evaluator(model, _space(model), (x, y), ["accuracy"]).evaluate(_space(model).config(0))
    assert torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with unfused():
            pass
        assert not torch.backends.mha.get_fastpath_enabled()  # the caller's own choice kept
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


def test_the_float_linear_parameters_are_named(tiny):
    model, x, y = tiny
    notes = Evaluator(model, _space(model), (x, y), ["accuracy"]).notes
    floats = [n for n in notes if n.startswith("stay float")]
    assert len(floats) == 1
    assert "enc.self_attn.in_proj_weight" in floats[0]
    assert "enc.self_attn.out_proj (NonDynamicallyQuantizableLinear)" in floats[0]


class ReadsItsWeight(nn.Module):
    """Calls `first` but only reads `second`'s weight, as a fused kernel would."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 8)
        self.second = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.relu(self.first(x)), self.second.weight, self.second.bias)


def test_a_quantized_layer_the_forward_never_calls_is_refused():
    torch.manual_seed(0)
    model = ReadsItsWeight().eval()
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    layer = {"name": ["integer"], "weight_width": [2, 8]}
    space = SearchSpace(model, "name", {"default": layer})
    with pytest.raises(ConfigError, match="layer 'second' is quantized by the space but the"):
        Evaluator(model, space, (x, y), ["accuracy"])
    # Left float, it is no candidate's concern: accepted.
    space = SearchSpace(model, "name", {"default": {"name": ["NA"]}, "first": layer})
    assert Evaluator(model, space, (x, y), ["accuracy"]).evaluate(space.config(0))
