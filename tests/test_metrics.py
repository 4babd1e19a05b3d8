"""Tests for bitscout.evaluate.metrics' profile and static metrics (model size, average
bitwidth, FLOPs, BOPs): every expected value is worked out by hand or by another tool.
Forward metrics and latency are in tests/test_metrics_forward.py, the registry and users'
metrics in tests/test_metrics_registry.py."""

from __future__ import annotations

import pytest
import torch
from metrics_support import _ctx, _value
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bitscout.evaluate.metrics import (
    compute_metrics,
)
from bitscout.evaluate.profile import profile_model
from bitscout.quant.formats import Integer
from bitscout.quant.layers import LayerQuant
from bitscout.zoo.models import build_model

TOY_LAYERS = ("seq_blocks.2", "seq_blocks.5", "seq_blocks.8")


def _q(weight: int | None = None, bias: int | None = None, data_in: int | None = None):
    def fmt(width: int | None) -> Integer | None:
        return None if width is None else Integer(width)

    return LayerQuant(data_in=fmt(data_in), weight=fmt(weight), bias=fmt(bias))


# --- profile and static metrics -------------------------------------------------------------


def test_jsc_tiny_profile_and_model_size():
    ctx = _ctx("jsc-tiny")
    # BatchNorm1d(16): 16 weight + 16 bias; Linear(16, 5): 80 weight + 5 bias.
    assert ctx.profile.param_count == 16 + 16 + 80 + 5 == 117
    assert _value("model_size", ctx) == 117.0
    (layer,) = ctx.profile.layers
    assert (layer.path, layer.type, layer.macs) == ("seq_blocks.2", "linear", 80)
    assert (layer.weight_count, layer.bias_count) == (80, 5)


def test_profile_leaves_model_untouched():
    model = build_model("jsc-tiny")
    model.train()
    bn = model.seq_blocks[0]
    before = bn.running_mean.clone()
    profile_model(model, torch.randn(1, 16) * 5 + 3)
    assert model.training and bn.training
    assert torch.equal(bn.running_mean, before)
    assert all(not m._forward_hooks for m in model.modules())


def test_profile_rejects_a_batch():
    with pytest.raises(ValueError, match="batch of one"):
        profile_model(build_model("jsc-tiny"), torch.zeros(2, 16))


class _Mix(nn.Module):
    """A matrix product inline in forward, beside modules without an analytic FLOP rule."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 8))
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return torch.softmax(self.norm(x) @ self.w, dim=-1) + x


def test_flops_of_modules_without_a_rule_come_from_flop_counter_mode():
    model = nn.Sequential(nn.Linear(4, 8), _Mix(), nn.GELU(), nn.Linear(8, 2))
    profile = profile_model(model, torch.zeros(1, 4))
    # Linear 2*4*8 and 2*8*2 by rule, GELU 8 by rule; the inline 8x8 product 2*8*8 as counted
    # by FlopCounterMode; LayerNorm, softmax and the residual add count 0 there.
    assert profile.flops == 2 * 4 * 8 + 2 * 8 * 8 + 8 + 2 * 8 * 2
    assert [layer.macs for layer in profile.layers] == [32, 16]


def test_model_size_bits():
    quantized = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=4, bias=8)})
    # BN's 32 parameters stay float; the Linear's 80 weights at 4 bits, 5 biases at 8 bits.
    assert _value("model_size_bits", quantized) == 32 * 32 + 80 * 4 + 5 * 8
    assert _value("model_size_bits", _ctx("jsc-tiny")) == 117 * 32
    half = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=4)})  # float bias counts 32 bits
    assert _value("model_size_bits", half) == 32 * 32 + 80 * 4 + 5 * 32


def test_plan_for_another_model_is_refused():
    ctx = _ctx("jsc-tiny", {"seq_blocks.9": None})
    with pytest.raises(ValueError, match="plan"):
        compute_metrics(["bops"], ctx)


def test_average_bitwidth_and_memory_density():
    plan = dict(zip(TOY_LAYERS, (_q(weight=2), _q(weight=4), _q(weight=8)), strict=True))
    ctx = _ctx("jsc-toy", plan)
    # Linear weights: 16*8 = 128, 8*8 = 64, 8*5 = 40.
    expected = (2 * 128 + 4 * 64 + 8 * 40) / (128 + 64 + 40)
    assert _value("average_bitwidth", ctx) == pytest.approx(expected)
    assert _value("memory_density", ctx) == pytest.approx(32 / expected)

    assert _value("average_bitwidth", _ctx("jsc-toy")) == 32.0
    assert _value("memory_density", _ctx("jsc-toy")) == 1.0

    one_float = _ctx("jsc-toy", {**plan, "seq_blocks.2": None})
    assert _value("average_bitwidth", one_float) == pytest.approx((4 * 64 + 8 * 40) / (64 + 40))

    float_weight = _ctx("jsc-toy", {**plan, "seq_blocks.2": _q(data_in=8)})
    expected = (32 * 128 + 4 * 64 + 8 * 40) / (128 + 64 + 40)
    assert _value("average_bitwidth", float_weight) == pytest.approx(expected)


@pytest.mark.parametrize(("name", "features"), [("jsc-s", 16), ("mlp", 64), ("cnn", 64)])
def test_layer_flops_agree_with_flop_counter(name, features):
    model = build_model(name).eval()
    sample = torch.randn(1, features)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(sample)
    profile = profile_model(model, sample)
    assert counter.get_total_flops() > 0
    assert 2 * sum(layer.macs for layer in profile.layers) == counter.get_total_flops()


def test_whole_model_flops_by_hand():
    # BN 16 elements * 2, ReLU 16, Linear 2 * 16 * 5, ReLU 5.
    assert _value("flops", _ctx("jsc-tiny")) == 16 * 2 + 16 + 2 * 16 * 5 + 5 == 213
    quantized = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=2, data_in=2)})
    assert _value("flops", quantized) == 213


def test_cnn_flops_by_hand():
    c = 8
    model = build_model("cnn", channels=c)
    profile = profile_model(model, torch.zeros(1, 64))
    conv1 = 8 * 8 * c * (1 * 9)  # output elements * in_channels * kernel
    conv2 = 4 * 4 * 2 * c * (c * 9)
    linear = 2 * c * 2 * 2 * 10
    relu = 8 * 8 * c + 4 * 4 * 2 * c
    pools = 4 * 4 * c * 3 + 2 * 2 * 2 * c * 3  # max over 2x2: 3 comparisons per output
    assert profile.flops == 2 * (conv1 + conv2 + linear) + relu + pools
    assert [layer.type for layer in profile.layers] == ["conv2d", "conv2d", "linear"]


def test_conv1d_groups_and_avg_pool_by_hand():
    model = nn.Sequential(
        nn.Unflatten(1, (2, 8)),
        nn.Conv1d(2, 4, 3, padding=1, groups=2),
        nn.BatchNorm1d(4),
        nn.AvgPool1d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(16, 3),
        nn.Tanh(),
    )
    sample = torch.randn(1, 16)
    profile = profile_model(model, sample)
    conv_macs = 4 * 8 * (2 // 2) * 3  # output elements * in_channels/groups * kernel
    assert [(s.type, s.macs) for s in profile.layers] == [("conv1d", conv_macs), ("linear", 48)]
    assert (profile.layers[0].weight_count, profile.layers[0].bias_count) == (4 * 1 * 3, 4)
    bn, pool, tanh = 4 * 8 * 2, 4 * 4 * 2, 3
    assert profile.flops == 2 * (conv_macs + 48) + bn + pool + tanh
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(sample)
    assert counter.get_total_flops() == 2 * (conv_macs + 48)


def test_bops_by_hand():
    quantized = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=4, data_in=8)})
    assert _value("bops", quantized) == 80 * 4 * 8
    assert _value("bops", _ctx("jsc-tiny")) == 80 * 32 * 32
    weight_only = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=4)})
    assert _value("bops", weight_only) == 80 * 4 * 32
