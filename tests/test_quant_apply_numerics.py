"""Tests for bitscout.quant.apply's quantized models: the original model is never modified,
and the outputs of quantized jsc-tiny and other models, pruned ones included, equal forwards
written by hand with the fixed-point reference. Split from tests/test_quant_apply.py."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixed_point_ref import ref_quantize, ref_tensor
from quant_apply_support import cfg
from torch import nn

from bitscout.quant import (
    Integer,
    LayerQuant,
    QuantLinear,
    quantize_model,
    resolve_plan,
)
from bitscout.zoo.models import build_model


def random_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Nontrivial BN statistics and affine parameters, then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))
    return model.eval()


def ref_norm(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """hls4ml's BatchNormalization, every value in ap_fixed<32,16> rounded half to even (the
    products of these small values are exact in float64)."""

    def q(v: torch.Tensor) -> torch.Tensor:
        return torch.round(v.double() * 2**16).clamp(-(2**31), 2**31 - 1) / 2**16

    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    shift = norm.bias.double() - norm.running_mean.double() * scale
    return q(q(x) * q(scale) + q(shift)).float()


def hand_forward(model: nn.Module, resolved: dict[str, LayerQuant | None], x: torch.Tensor):
    """Run the ORIGINAL float model's layers, doing each quantized layer with the reference."""
    for i, layer in enumerate(model.seq_blocks):
        quant = resolved.get(f"seq_blocks.{i}")
        if isinstance(layer, nn.BatchNorm1d):
            x = ref_norm(layer, x)
            continue
        if quant is None:
            x = layer(x)
            continue
        qx, qw = ref_tensor(x, quant.data_in), ref_tensor(layer.weight, quant.weight)
        qb = None if layer.bias is None else ref_tensor(layer.bias, quant.bias)
        if isinstance(layer, nn.Linear):
            x = F.linear(qx, qw, qb)
        else:
            x = F.conv2d(qx, qw, qb, stride=layer.stride, padding=layer.padding)
    return x


@pytest.mark.parametrize("name", ["jsc-tiny", "jsc-toy", "cnn"])
def test_original_model_is_never_modified(name):
    torch.manual_seed(0)
    model = build_model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = {"by": "type", "default": cfg(4, 2), "linear": cfg(6, 3)}
    new = quantize_model(model, plan)
    assert new is not model and new.seq_blocks is not model.seq_blocks
    assert all(
        type(m) in (nn.Linear, nn.Conv2d)
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    )
    old_ptrs = {v.data_ptr() for v in model.state_dict().values()}
    assert not old_ptrs & {v.data_ptr() for v in new.state_dict().values()}
    assert new.state_dict().keys() == before.keys()
    # Train the new model a step (BN statistics update too) and scribble on its weights.
    optim = torch.optim.SGD(new.parameters(), lr=0.5)
    x = torch.randn(8, 64 if name == "cnn" else 16)
    new.train()
    new(x).square().sum().backward()
    optim.step()
    with torch.no_grad():
        for p in new.parameters():
            p.add_(1.0)
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in model.parameters())


def test_jsc_tiny_output_equals_hand_forward():
    torch.manual_seed(1)
    model = random_stats(build_model("jsc-tiny"))
    text = """
    [passes.quantize]
    by = "type"
    [passes.quantize.default.config]
    name = "integer"
    data_in_width = 6
    data_in_frac_width = 3
    weight_width = 4
    weight_frac_width = 2
    bias_width = 5
    bias_frac_width = "NA"
    rounding = "half_up"
    """
    plan = tomllib.loads(text)["passes"]["quantize"]
    new = quantize_model(model, plan)
    assert type(new.seq_blocks[2]) is QuantLinear
    x = torch.randn(64, 16) * 2
    bn = model.seq_blocks[0]
    h = (
        (x.double() - bn.running_mean.double())
        / torch.sqrt(bn.running_var.double() + bn.eps)
        * bn.weight.double()
        + bn.bias.double()
    ).clamp_min(0)
    h32 = torch.relu(bn(x))
    torch.testing.assert_close(h32.double(), h, rtol=1e-5, atol=1e-5)
    lin = model.seq_blocks[2]
    qx = ref_quantize(h32.detach().numpy(), 6, 3, "half_up")
    qw = ref_quantize(lin.weight.detach().numpy(), 4, 2, "half_up")
    qb = ref_quantize(lin.bias.detach().numpy(), 5, None, "half_up")
    want = np.maximum(qx @ qw.T + qb, 0)
    with torch.no_grad():
        got = new(x)
    torch.testing.assert_close(got.double(), torch.from_numpy(want), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, model(x).detach(), atol=1e-3)  # quantization did something


@pytest.mark.parametrize(
    ("name", "plan"),
    [
        (
            "jsc-toy",
            {
                "by": "name",
                "default": cfg(5, 3),
                "seq_blocks_5": cfg(3, 1, overflow="wrap"),
                "seq_blocks.8": cfg(None),
            },
        ),
        ("jsc-toy", {"by": "type", "linear": cfg(4, "NA", rounding="floor")}),
        ("cnn", {"by": "type", "conv2d": cfg(5, 3), "linear": cfg(6, 2, rounding="half_up")}),
        ("cnn", {"seq_blocks_4": cfg(3, 1), "default": cfg(8, 5)}),
    ],
)
def test_quantized_model_output_equals_hand_forward(name, plan):
    torch.manual_seed(3)
    model = random_stats(build_model(name))
    resolved = resolve_plan(model, plan)
    new = quantize_model(model, plan)
    x = torch.randn(16, 64 if name == "cnn" else 16) * 2
    with torch.no_grad():
        got, want = new(x), hand_forward(model, resolved, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, model(x).detach(), atol=1e-3)


def test_a_pruned_model_is_quantized_with_its_effective_weights():
    """Issue 20 item 16: `torch.nn.utils.prune` leaves `weight_orig`, `weight_mask` and a
    pre-hook; quantize_model copies orig * mask (it crashed in deepcopy before)."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    prune.random_unstructured(model[2], "bias", amount=0.5)
    effective = [model[0].weight.detach().clone(), model[2].bias.detach().clone()]
    plan = {"default": {"config": {"name": "integer", "data_in_width": 8, "weight_width": 8,
                                   "bias_width": 8}}}  # fmt: skip
    quantized = quantize_model(model, plan)
    fmt = Integer(8)
    assert torch.equal(quantized[0].weight, effective[0])  # float: quantized in forward
    assert (quantized[0].weight == 0).sum() >= 15  # the pruned half stays zero
    assert torch.equal(quantized[2].bias, effective[1])  # the layer's own bias, masked
    x = torch.randn(7, 6)
    layer = [fmt.quantize_values(t.detach()) for t in (model[0].weight, model[0].bias)]
    hidden = F.relu(F.linear(fmt.quantize_values(x), *layer))
    second = [fmt.quantize_values(t.detach()) for t in (model[2].weight, model[2].bias)]
    with torch.no_grad():
        assert torch.equal(quantized(x), F.linear(fmt.quantize_values(hidden), *second))
    assert quantized[0].weight.requires_grad and isinstance(quantized[0].weight, nn.Parameter)
    # The original keeps its pruning: parameters, mask and hook.
    assert hasattr(model[0], "weight_orig") and hasattr(model[0], "weight_mask")
    assert not hasattr(quantized[0], "weight_orig")
