"""Tests for bitscout.quant.space: MASE `[search.search_space]` seed tables as categorical
dimensions (the seed space, its order and plans; jsc-toy by type and by name with default
choices). Config errors are in tests/test_space_errors.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from space_support import TOY_LAYERS, seed_table, tiny, toy

from bitscout.quant import Integer, LayerQuant, QuantLinear, quantize_model
from bitscout.quant.space import parse_space

# The seed space, written out independently of the example file.
SEED_DIMS = (
    ("seq_blocks_2/data_in_width", [4, 8, 16]),
    ("seq_blocks_2/weight_width", [2, 4, 8, 16]),
    ("seq_blocks_2/bias_width", [2, 4, 8, 16]),
)
SEED_NAMES = [name for name, _ in SEED_DIMS]


@pytest.fixture(scope="module")
def seed_space():
    return parse_space(seed_table(), tiny())


def ref_quantize(x: torch.Tensor, width: int, frac: int) -> torch.Tensor:
    """Independent fixed point: round half to even, saturate, in float64."""
    s = x.detach().double().numpy() * 2.0**frac
    k = np.clip(np.round(s), -(2 ** (width - 1)), 2 ** (width - 1) - 1)
    return torch.from_numpy(k * 2.0**-frac)


# --- the seed space ------------------------------------------------------------------------


def test_seed_space_size_and_dimension_names(seed_space):
    assert seed_space.size == 48
    assert [d.name for d in seed_space.dimensions] == SEED_NAMES
    assert [list(d.choices) for d in seed_space.dimensions] == [c for _, c in SEED_DIMS]
    # Single-choice fields are fixed, not dimensions.
    names = {d.name for d in seed_space.dimensions}
    for fixed in ("name", "data_in_frac_width", "weight_frac_width", "bias_frac_width"):
        assert f"seq_blocks_2/{fixed}" not in names
    # The default table (name = ["NA"]) adds no dimension either.
    assert all(d.layer == "seq_blocks_2" for d in seed_space.dimensions)


def test_index_config_round_trip_and_distinct(seed_space):
    configs = [seed_space.config(i) for i in range(48)]
    for i, cfg in enumerate(configs):
        assert seed_space.index(cfg) == i
    assert len({tuple(sorted(c.items())) for c in configs}) == 48


def test_order_is_mixed_radix_last_dimension_fastest(seed_space):
    expected = [
        dict(zip(SEED_NAMES, combo, strict=True))
        for combo in itertools.product(*(c for _, c in SEED_DIMS))
    ]
    assert [seed_space.config(i) for i in range(48)] == expected
    # Dict order follows the dimensions too.
    assert all(list(seed_space.config(i)) == SEED_NAMES for i in range(48))
    # Explicit spot checks of the radix: strides 16, 4, 1.
    assert seed_space.config(1) == dict(zip(SEED_NAMES, (4, 2, 4), strict=True))
    assert seed_space.config(4) == dict(zip(SEED_NAMES, (4, 4, 2), strict=True))
    assert seed_space.config(16) == dict(zip(SEED_NAMES, (8, 2, 2), strict=True))
    assert seed_space.config(47) == dict(zip(SEED_NAMES, (16, 16, 16), strict=True))


def test_choices_are_values_not_indexes(seed_space):
    cfg = seed_space.config(0)
    assert cfg == {
        "seq_blocks_2/data_in_width": 4,
        "seq_blocks_2/weight_width": 2,
        "seq_blocks_2/bias_width": 2,
    }
    for i in range(48):
        for value in seed_space.config(i).values():
            assert type(value) is int
            assert value in (2, 4, 8, 16)
    # The index of a config is looked up by value; an index (or a non-choice) is refused.
    assert (
        seed_space.index(
            {
                "seq_blocks_2/data_in_width": 16,
                "seq_blocks_2/weight_width": 16,
                "seq_blocks_2/bias_width": 16,
            }
        )
        == 47
    )
    with pytest.raises(ValueError, match="weight_width"):
        seed_space.index(
            {
                "seq_blocks_2/data_in_width": 4,
                "seq_blocks_2/weight_width": 1,
                "seq_blocks_2/bias_width": 2,
            }
        )


@pytest.mark.parametrize("index", [-1, 48, 1000])
def test_config_index_out_of_range(seed_space, index):
    with pytest.raises(IndexError):
        seed_space.config(index)


def test_seed_plan_leaves_other_layers_float_and_frac_is_half_width(seed_space):
    for i in range(48):
        cfg = seed_space.config(i)
        d, w, b = (cfg[n] for n in SEED_NAMES)
        resolved = seed_space.resolved(cfg)
        assert resolved == {
            "seq_blocks.2": LayerQuant(Integer(d, d // 2), Integer(w, w // 2), Integer(b, b // 2))
        }


def test_plan_applied_with_quantize_model(seed_space):
    model = tiny().eval()
    cfg = dict(zip(SEED_NAMES, (8, 4, 16), strict=True))
    quantized = quantize_model(model, seed_space.plan(cfg))
    layer = quantized.seq_blocks[2]
    assert isinstance(layer, QuantLinear)
    q = layer.quant
    assert (q.data_in.width, q.data_in.frac_width) == (8, 4)
    assert (q.weight.width, q.weight.frac_width) == (4, 2)
    assert (q.bias.width, q.bias.frac_width) == (16, 8)
    assert type(model.seq_blocks[2]) is torch.nn.Linear  # the float model is left alone
    # The candidate's forward equals an independent fixed-point computation.
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = model.seq_blocks[1](model.seq_blocks[0](x))
        lin = model.seq_blocks[2]
        expected = F.relu(
            F.linear(
                ref_quantize(h, 8, 4), ref_quantize(lin.weight, 4, 2), ref_quantize(lin.bias, 16, 8)
            )
        )
        got = quantized(x).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_explicit_frac_width_is_kept():
    table = seed_table()
    table["seed"]["seq_blocks_2"]["config"]["weight_frac_width"] = [3]
    table["seed"]["seq_blocks_2"]["config"]["bias_frac_width"] = [-1, 5]
    space = parse_space(table, tiny())
    assert space.size == 96
    assert "seq_blocks_2/bias_frac_width" in [d.name for d in space.dimensions]
    cfg = space.config(space.size - 1)
    assert cfg["seq_blocks_2/bias_frac_width"] == 5
    quantized = quantize_model(tiny(), space.plan(cfg))
    assert quantized.seq_blocks[2].quant.weight == Integer(16, 3)
    assert quantized.seq_blocks[2].quant.bias == Integer(16, 5)


def test_layer_path_key_is_the_same_layer():
    table = seed_table()
    table["seed"]["seq_blocks.2"] = table["seed"].pop("seq_blocks_2")
    space = parse_space(table, tiny())
    assert [d.name for d in space.dimensions] == SEED_NAMES
    assert space.size == 48


# --- jsc-toy: by type and by name with default choices --------------------------------------


def test_by_type_dimensions_are_shared_by_all_linear_layers():
    table = {
        "setup": {"by": "type"},
        "seed": {
            "default": {"config": {"name": ["NA"]}},
            "linear": {
                "config": {
                    "name": ["integer"],
                    "data_in_width": [8, 16],
                    "weight_width": [2, 4, 8],
                    "bias_width": [8],
                }
            },
        },
    }
    model = toy()
    space = parse_space(table, model)
    assert [d.name for d in space.dimensions] == ["linear/data_in_width", "linear/weight_width"]
    assert space.size == 6
    for i in range(space.size):
        cfg = space.config(i)
        d, w = cfg["linear/data_in_width"], cfg["linear/weight_width"]
        expected = LayerQuant(Integer(d, d // 2), Integer(w, w // 2), Integer(8, 4))
        resolved = space.resolved(cfg)
        assert resolved == {
            "seq_blocks.2": expected,
            "seq_blocks.5": expected,
            "seq_blocks.8": expected,
        }
        quantized = quantize_model(model, space.plan(cfg))
        for idx in (2, 5, 8):
            assert quantized.seq_blocks[idx].quant == expected


def test_by_name_default_choices_give_per_layer_dimensions():
    table = {
        "setup": {"by": "name"},
        "seed": {
            "default": {
                "config": {"name": ["integer"], "weight_width": [4, 8], "data_in_width": [16]}
            }
        },
    }
    model = toy()
    space = parse_space(table, model)
    assert [d.name for d in space.dimensions] == [f"{n}/weight_width" for n in TOY_LAYERS]
    assert space.size == 8
    expected_order = [
        dict(zip([f"{n}/weight_width" for n in TOY_LAYERS], c, strict=True))
        for c in itertools.product([4, 8], repeat=3)
    ]
    assert [space.config(i) for i in range(8)] == expected_order
    cfg = {
        "seq_blocks_2/weight_width": 8,
        "seq_blocks_5/weight_width": 4,
        "seq_blocks_8/weight_width": 8,
    }
    resolved = space.resolved(cfg)
    assert {p: q.weight.width for p, q in resolved.items()} == {
        "seq_blocks.2": 8,
        "seq_blocks.5": 4,
        "seq_blocks.8": 8,
    }
    assert all(q.data_in == Integer(16, 8) for q in resolved.values())
    quantized = quantize_model(model, space.plan(cfg))
    assert [quantized.seq_blocks[i].quant.weight for i in (2, 5, 8)] == [
        Integer(8, 4),
        Integer(4, 2),
        Integer(8, 4),
    ]


def test_by_name_layer_table_wins_over_default():
    table = {
        "seed": {
            "default": {"config": {"name": ["integer"], "weight_width": [4, 8]}},
            "seq_blocks_5": {"config": {"name": ["NA"]}},
        },
    }
    model = toy()
    space = parse_space(table, model)
    assert space.by == "name"
    assert [d.name for d in space.dimensions] == [
        "seq_blocks_2/weight_width",
        "seq_blocks_8/weight_width",
    ]
    resolved = space.resolved(space.config(1))
    assert resolved["seq_blocks.5"] is None
    assert resolved["seq_blocks.2"].weight == Integer(4, 2)
    assert resolved["seq_blocks.8"].weight == Integer(8, 4)
