"""Tests for bitscout.quant.apply: how MASE `[passes.quantize]` plans resolve in
`quantize_model` (by type, by name, precedence, spellings, layer fields, errors). The
quantized models' outputs against hand-written forwards are in
tests/test_quant_apply_numerics.py."""

from __future__ import annotations

import copy

import pytest
import torch
from quant_apply_support import cfg
from torch import nn

from bitscout.errors import ConfigError
from bitscout.quant import (
    Integer,
    LayerQuant,
    QuantConv2d,
    QuantLinear,
    QuantPlan,
    quantize_model,
    resolve_plan,
)
from bitscout.quant.apply import parse_layer_config
from bitscout.quant.norms import FixedBatchNorm1d
from bitscout.zoo.models import build_model

JSC_TOY_LAYERS = ("seq_blocks.2", "seq_blocks.5", "seq_blocks.8")
CNN_LAYERS = ("seq_blocks.1", "seq_blocks.4", "seq_blocks.8")


def widths(model: nn.Module) -> dict[str, int | None]:
    """Layer path -> its weight width, None where the layer stayed float."""
    return {
        path: m.quant.weight.width if isinstance(m, QuantLinear | QuantConv2d) else None
        for path, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    }


def test_by_type_quantizes_every_linear_and_nothing_else():
    model = build_model("jsc-toy")
    new = quantize_model(model, {"by": "type", "linear": cfg(5, 2)})
    for (path, old), (path2, m) in zip(model.named_modules(), new.named_modules(), strict=True):
        assert path == path2
        if isinstance(old, nn.Linear):
            assert type(m) is QuantLinear
            assert m.quant == LayerQuant(Integer(5, 2), Integer(5, 2), Integer(5, 2))
        elif isinstance(old, nn.BatchNorm1d):  # its fixed-point twin (bitscout.quant.norms)
            assert type(m) is FixedBatchNorm1d and isinstance(m, nn.BatchNorm1d)
        else:
            assert type(m) is type(old)  # ReLU, Sequential, SeqModel
    assert widths(new) == dict.fromkeys(JSC_TOY_LAYERS, 5)


def test_by_type_on_cnn_quantizes_convs_and_default_covers_the_rest():
    model = build_model("cnn")
    new = quantize_model(model, {"by": "type", "conv2d": cfg(6), "default": cfg(3, 1)})
    assert widths(new) == {"seq_blocks.1": 6, "seq_blocks.4": 6, "seq_blocks.8": 3}
    assert new.seq_blocks[1].quant.weight == Integer(6, 3)
    assert type(new.seq_blocks[3]) is nn.MaxPool2d and type(new.seq_blocks[0]) is nn.Unflatten
    only_conv = quantize_model(model, {"by": "type", "conv2d": cfg(6)})
    assert widths(only_conv) == {"seq_blocks.1": 6, "seq_blocks.4": 6, "seq_blocks.8": None}


def test_precedence_name_over_type_over_default():
    model = build_model("jsc-toy")
    plan = {"by": "name", "default": cfg(4), "linear": cfg(6), "seq_blocks_5": cfg(8)}
    assert widths(quantize_model(model, plan)) == {
        "seq_blocks.2": 6,
        "seq_blocks.5": 8,
        "seq_blocks.8": 6,
    }
    cnn = build_model("cnn")
    plan = {"by": "name", "default": cfg(4), "conv2d": cfg(6), "seq_blocks_1": cfg(8)}
    assert widths(quantize_model(cnn, plan)) == {
        "seq_blocks.1": 8,
        "seq_blocks.4": 6,
        "seq_blocks.8": 4,
    }
    # Precedence does not depend on the order of the keys.
    plan = {"seq_blocks_1": cfg(8), "conv2d": cfg(6), "default": cfg(4)}
    assert widths(quantize_model(cnn, plan)) == {
        "seq_blocks.1": 8,
        "seq_blocks.4": 6,
        "seq_blocks.8": 4,
    }


def test_both_name_spellings_agree():
    model = build_model("jsc-toy")
    fx = resolve_plan(model, {"by": "name", "seq_blocks_2": cfg(7, 2)})
    path = resolve_plan(model, {"by": "name", "seq_blocks.2": cfg(7, 2)})
    assert (
        fx
        == path
        == {
            "seq_blocks.2": LayerQuant(Integer(7, 2), Integer(7, 2), Integer(7, 2)),
            "seq_blocks.5": None,
            "seq_blocks.8": None,
        }
    )
    a = quantize_model(model, {"seq_blocks_2": cfg(7, 2)})  # by defaults to "name"
    b = quantize_model(model, {"seq_blocks.2": cfg(7, 2)})
    assert a.seq_blocks[2].quant == b.seq_blocks[2].quant
    assert type(a.seq_blocks[5]) is nn.Linear and type(b.seq_blocks[5]) is nn.Linear


def test_name_na_leaves_the_layer_float():
    model = build_model("jsc-toy")
    new = quantize_model(model, {"default": cfg(4), "seq_blocks_5": cfg(None)})
    assert type(new.seq_blocks[5]) is nn.Linear
    assert torch.equal(new.seq_blocks[5].weight, model.seq_blocks[5].weight)
    assert widths(new) == {"seq_blocks.2": 4, "seq_blocks.5": None, "seq_blocks.8": 4}
    untouched = quantize_model(model, {"by": "type", "linear": cfg(None)})
    assert all(type(m) is nn.Linear for m in untouched.seq_blocks if isinstance(m, nn.Linear))


def test_layer_config_fields():
    assert parse_layer_config(cfg(8)["config"], "k") == LayerQuant(*[Integer(8, 4)] * 3)
    partial = {
        "name": "integer",
        "weight_width": 6,
        "weight_frac_width": 5,
        "bias_width": 9,
        "rounding": "floor",
        "overflow": "wrap",
    }
    assert parse_layer_config(partial, "k") == LayerQuant(
        data_in=None,
        weight=Integer(6, 5, rounding="floor", overflow="wrap"),
        bias=Integer(9, 4, rounding="floor", overflow="wrap"),
    )
    assert parse_layer_config(
        {"name": "integer", "data_in_width": 3, "data_in_frac_width": -2}, "k"
    ) == LayerQuant(data_in=Integer(3, -2))


def test_quant_plan_object_equals_raw_table():
    model = build_model("cnn")
    lq = LayerQuant(Integer(8, 4, rounding="half_up"), Integer(5, 4, rounding="half_up"))
    plan = QuantPlan(by="type", layers={"conv2d": lq, "linear": None})
    raw = {
        "by": "type",
        "linear": cfg(None),
        "conv2d": {
            "config": {
                "name": "integer",
                "data_in_width": 8,
                "weight_width": 5,
                "weight_frac_width": 4,
                "rounding": "half_up",
            }
        },
    }
    assert resolve_plan(model, plan) == resolve_plan(model, raw)
    assert quantize_model(model, plan).seq_blocks[4].quant == lq


def test_report_key_is_ignored_and_empty_plan_changes_nothing():
    model = build_model("jsc-tiny")
    new = quantize_model(model, {"by": "type", "report": True})
    assert type(new.seq_blocks[2]) is nn.Linear and new is not model


@pytest.mark.parametrize(
    ("name", "plan", "key", "mentions"),
    [
        (
            "jsc-toy",
            {"seq_blocks_9": cfg(8)},
            "passes.quantize.seq_blocks_9",
            ["seq_blocks_2", "seq_blocks_5", "seq_blocks_8"],
        ),
        (
            "jsc-toy",
            {"by": "type", "lstm": cfg(8)},
            "passes.quantize.lstm",
            ["linear", "conv1d", "conv2d"],
        ),
        (
            "jsc-toy",
            {"by": "type", "seq_blocks_2": cfg(8)},
            "passes.quantize.seq_blocks_2",
            ["linear"],
        ),
        (
            "jsc-toy",
            {"seq_blocks_2": {"config": {"name": "integer", "weight_widht": 8}}},
            "passes.quantize.seq_blocks_2.config.weight_widht",
            ["weight_width"],
        ),
        ("jsc-toy", {"seq_blocks_2": cfg(0)}, "passes.quantize.seq_blocks_2.config", ["_width"]),
        (
            "jsc-toy",
            {"default": {"config": {"name": "integer", "weight_width": 33}}},
            "passes.quantize.default.config.weight_width",
            ["33"],
        ),
        (
            "jsc-toy",
            {"seq_blocks_2": {"config": {"name": "integer", "weight_width": 0}}},
            "passes.quantize.seq_blocks_2.config.weight_width",
            ["0"],
        ),
        (
            "cnn",
            {"by": "type", "conv2d": cfg(8, "abc")},
            "passes.quantize.conv2d.config.data_in_frac_width",
            ["abc"],
        ),
        (
            "jsc-toy",
            {"default": {"config": {"name": "minifloat", "weight_width": 8}}},
            "passes.quantize.default.config.name",
            ["minifloat", "integer"],
        ),
        ("jsc-toy", {"by": "layer", "default": cfg(8)}, "passes.quantize.by", ["layer"]),
        (
            "jsc-toy",
            {"default": cfg(8, rounding="nearest")},
            "passes.quantize.default.config.rounding",
            ["nearest"],
        ),
        (
            "jsc-toy",
            {"default": cfg(8, overflow="clip")},
            "passes.quantize.default.config.overflow",
            ["clip"],
        ),
        (
            "jsc-toy",
            {"default": cfg(8, 1.5)},
            "passes.quantize.default.config.data_in_frac_width",
            ["1.5"],
        ),
        ("jsc-toy", {"default": {"name": "integer"}}, "passes.quantize.default", []),
    ],
)
def test_config_errors_name_the_key(name, plan, key, mentions):
    model = build_model(name)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError) as info:
        quantize_model(model, plan)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert key in message
    for word in mentions:
        assert word in message
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
