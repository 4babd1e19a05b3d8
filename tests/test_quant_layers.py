"""Tests for bitscout.quant.layers: QuantLinear/QuantConv1d/QuantConv2d against a hand computation.

The quantized tensors of the reference come from an independent NumPy fixed-point reference.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixed_point_ref import ref_tensor
from torch import nn

from bitscout.quant import (
    Integer,
    LayerQuant,
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    quantize_model,
    register_layer_type,
)
from bitscout.quant.layers import to_quant
from bitscout.quant.space import parse_space


def on_grid(t: torch.Tensor, fmt: Integer) -> bool:
    k = t.detach().double() * 2.0**fmt.frac_width
    return bool(torch.equal(k, k.round()) and k.min() >= fmt.k_min and k.max() <= fmt.k_max)


FULL = LayerQuant(
    data_in=Integer(6, 3, rounding="half_up"),
    weight=Integer(4, 3, rounding="floor", overflow="wrap"),
    bias=Integer(5, 2),
)
QUANTS = {
    "full": FULL,
    "weight_only": LayerQuant(weight=Integer(3, 2)),
    "data_in_only": LayerQuant(data_in=Integer(8, None, overflow="wrap")),
    "no_bias_fmt": LayerQuant(data_in=Integer(8, 5), weight=Integer(8, 6)),
    "none": LayerQuant(),
}


def snapshot(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in layer.state_dict().items()}


def check_untouched(layer: nn.Module, before: dict[str, torch.Tensor], new: nn.Module) -> None:
    after = layer.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    new_ptrs = {t.data_ptr() for t in new.state_dict().values()}
    assert not new_ptrs & {t.data_ptr() for t in after.values()}


def scramble(layer: nn.Module, seed: int) -> None:
    """Larger weights and biases so saturation and wrap both happen."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.8)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", list(QUANTS))
def test_quant_linear_matches_hand_computation(name, bias):
    quant = QUANTS[name]
    torch.manual_seed(0)
    layer = nn.Linear(7, 5, bias=bias)
    scramble(layer, 1)
    before = snapshot(layer)
    q = to_quant(layer, quant)
    assert type(q) is QuantLinear and q.quant == quant
    assert (q.in_features, q.out_features) == (7, 5)
    assert (q.bias is None) == (not bias)
    x = torch.randn(11, 7) * 3
    x[0, :4] = torch.tensor([0.0625, -0.0625, 100.0, -100.0])  # ties and far out of range
    want = F.linear(
        ref_tensor(x, quant.data_in),
        ref_tensor(layer.weight, quant.weight),
        None if layer.bias is None else ref_tensor(layer.bias, quant.bias),
    )
    got = q(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    if name == "none":
        torch.testing.assert_close(got, layer(x), rtol=0, atol=0)
    elif quant.weight is not None:
        assert not torch.allclose(got, layer(x))
    check_untouched(layer, before, q)


CONV1D = [
    {},
    {"stride": 2, "padding": 1},
    {"dilation": 2, "padding": 2, "groups": 2},
    {"padding": "same"},
    {"padding": 2, "padding_mode": "reflect"},
    {"padding": 1, "padding_mode": "circular", "stride": 3},
]
CONV2D = [
    {},
    {"stride": (2, 1), "padding": (1, 2)},
    {"dilation": (1, 2), "padding": 1, "groups": 4},
    {"padding": "same", "dilation": 2},
    {"padding": 1, "padding_mode": "replicate"},
]


def conv_by_hand(layer: nn.Module, x: torch.Tensor, quant: LayerQuant, conv) -> torch.Tensor:
    qx = ref_tensor(x, quant.data_in)
    qw = ref_tensor(layer.weight, quant.weight)
    qb = None if layer.bias is None else ref_tensor(layer.bias, quant.bias)
    padding = layer.padding
    if layer.padding_mode != "zeros":
        pads: list[int] = []
        for p in reversed(padding):
            pads += [p, p]
        qx = F.pad(qx, pads, mode=layer.padding_mode)
        padding = 0
    return conv(
        qx,
        qw,
        qb,
        stride=layer.stride,
        padding=padding,
        dilation=layer.dilation,
        groups=layer.groups,
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", ["full", "weight_only", "data_in_only", "none"])
@pytest.mark.parametrize("options", CONV1D, ids=str)
def test_quant_conv1d_matches_hand_computation(options, name, bias):
    quant = QUANTS[name]
    torch.manual_seed(2)
    layer = nn.Conv1d(4, 6, 3, bias=bias, **options)
    scramble(layer, 3)
    before = snapshot(layer)
    q = to_quant(layer, quant)
    assert type(q) is QuantConv1d and q.quant == quant
    for attr in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(q, attr) == getattr(layer, attr), attr
    x = torch.randn(3, 4, 13) * 2
    got = q(x)
    torch.testing.assert_close(got, conv_by_hand(layer, x, quant, F.conv1d), rtol=1e-6, atol=1e-5)
    if name == "none":
        torch.testing.assert_close(got, layer(x), rtol=0, atol=0)
    check_untouched(layer, before, q)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", ["full", "weight_only", "data_in_only", "none"])
@pytest.mark.parametrize("options", CONV2D, ids=str)
def test_quant_conv2d_matches_hand_computation(options, name, bias):
    quant = QUANTS[name]
    torch.manual_seed(4)
    layer = nn.Conv2d(4, 8, (3, 2), bias=bias, **options)
    scramble(layer, 5)
    before = snapshot(layer)
    q = to_quant(layer, quant)
    assert type(q) is QuantConv2d and q.quant == quant
    for attr in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(q, attr) == getattr(layer, attr), attr
    x = torch.randn(2, 4, 9, 8) * 2
    got = q(x)
    torch.testing.assert_close(got, conv_by_hand(layer, x, quant, F.conv2d), rtol=1e-6, atol=1e-5)
    if name == "none":
        torch.testing.assert_close(got, layer(x), rtol=0, atol=0)
    check_untouched(layer, before, q)


@pytest.mark.parametrize(
    "layer",
    [nn.Linear(6, 4), nn.Conv1d(2, 3, 3), nn.Conv2d(2, 3, 3)],
    ids=lambda m: type(m).__name__,
)
def test_to_quant_copies_do_not_share_storage(layer):
    before = snapshot(layer)
    q = to_quant(layer, FULL)
    for key, value in q.state_dict().items():
        assert torch.equal(value, before[key]), key  # same float values ...
    with torch.no_grad():
        q.weight.add_(1.0)  # ... but its own storage
        q.bias.zero_()
    check_untouched(layer, before, q)
    assert layer.weight.requires_grad and q.weight.requires_grad


def test_stored_parameters_stay_float_and_are_quantized_on_the_fly():
    layer = nn.Linear(5, 3)
    scramble(layer, 7)
    q = to_quant(layer, FULL)
    assert torch.equal(q.weight, layer.weight)  # the float master weights are kept
    qx, qw, qb = q._quantized(torch.randn(4, 5))
    assert on_grid(qx, FULL.data_in) and on_grid(qw, FULL.weight) and on_grid(qb, FULL.bias)
    assert torch.equal(qw, ref_tensor(layer.weight, FULL.weight))


def test_straight_through_gradients_through_a_layer():
    layer = nn.Linear(4, 3)
    scramble(layer, 8)
    q = to_quant(layer, FULL)
    x = (torch.randn(6, 4) * 5).requires_grad_()
    q(x).sum().backward()
    qx, qw = ref_tensor(x, FULL.data_in), ref_tensor(layer.weight, FULL.weight)
    # d/dW sum(qx @ qW.T + qb) = ones(3, 6) @ qx; identity through the weight's quantize,
    # saturated (wrapped) or not
    torch.testing.assert_close(q.weight.grad, torch.ones(3, 6) @ qx)
    torch.testing.assert_close(q.bias.grad, torch.full((3,), 6.0))
    # the input's gradient stops where it saturates: Integer(6, 3) holds -32/8 .. 31/8
    inside = ((x >= -32 / 8) & (x <= 31 / 8)).float()
    assert 0 < inside.sum() < inside.numel()  # both kinds of element are checked
    torch.testing.assert_close(x.grad, (torch.ones(6, 3) @ qw) * inside)
    assert layer.weight.grad is None


def test_quant_layers_are_subclasses_of_float_layers():
    assert issubclass(QuantLinear, nn.Linear)
    assert issubclass(QuantConv1d, nn.Conv1d)
    assert issubclass(QuantConv2d, nn.Conv2d)
    assert "quant=" in repr(to_quant(nn.Linear(2, 2), FULL))


@pytest.mark.parametrize("layer", [nn.Linear(3, 2), nn.Conv1d(2, 2, 3)], ids=["linear", "conv1d"])
def test_to_quant_keeps_dtype(layer):
    layer = layer.double()
    q = to_quant(layer, LayerQuant(weight=Integer(8)))
    assert q.weight.dtype == torch.float64
    x = torch.randn((4, 3) if isinstance(layer, nn.Linear) else (4, 2, 5), dtype=torch.float64)
    assert q(x).dtype == torch.float64


class _Scaled(nn.Linear):
    """A user's layer type: a Linear subclass that bitscout does not know by itself."""


def _scaled_to_quant(layer: nn.Module, quant: LayerQuant) -> nn.Module:
    return QuantLinear.from_float(layer, quant)  # type: ignore[arg-type]


@pytest.fixture
def scaled_type():
    """`_Scaled` registered as layer type `scaled`, and unregistered afterwards."""
    from bitscout.quant import layers

    register_layer_type(_Scaled, "scaled", _scaled_to_quant)
    yield "scaled"
    layers.LAYER_HANDLERS._items.pop("scaled")
    layers.QUANT_TYPES.pop(_Scaled)
    layers.TYPE_NAMES.pop(_Scaled)


def test_a_registered_layer_type_is_searched_and_quantized(scaled_type):
    torch.manual_seed(0)
    model = nn.Sequential(_Scaled(3, 2), nn.ReLU(), nn.Linear(2, 2))
    seed = {
        "default": {"config": {"name": ["NA"]}},
        "scaled": {"config": {"name": ["integer"], "data_in_width": [4], "weight_width": [4, 6]}},
    }
    space = parse_space({"setup": {"by": "type"}, "seed": seed}, model)
    assert space.types == {"0": "scaled", "2": "linear"}
    assert [d.name for d in space.dimensions] == ["scaled/weight_width"]
    config = space.config(0)  # weight width 4: k / 4, k in [-8, 7]
    quantized = quantize_model(model, space.plan(config))
    assert isinstance(quantized[0], QuantLinear) and type(quantized[2]) is nn.Linear
    x = torch.randn(5, 3)

    def grid(t: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(t * 4), -8, 7) / 4

    first = F.linear(grid(x), grid(model[0].weight), model[0].bias)
    expected = model[2](torch.relu(first))
    torch.testing.assert_close(quantized(x), expected)


def test_a_layer_type_is_registered_once(scaled_type):
    with pytest.raises(ValueError, match="registered twice"):
        register_layer_type(_Scaled, "scaled2", _scaled_to_quant)
    with pytest.raises(ValueError, match="registered twice"):
        register_layer_type(_Scaled2, "scaled", _scaled_to_quant)
    with pytest.raises(ValueError, match="cannot be named"):
        register_layer_type(_Scaled2, "default", _scaled_to_quant)


class _Scaled2(nn.Linear):
    pass
