"""Tests for bitscout.quant.space's config errors: each bad `[search.search_space]` table is a
`ConfigError` naming its key, with the exact width message, the model's layers listed for an
unknown name, a layer name refused by type, and an empty table. Split from
tests/test_space.py."""

from __future__ import annotations

import pytest
from space_support import KEY, TOY_LAYERS, seed_table, tiny, toy

from bitscout.errors import ConfigError
from bitscout.quant.space import parse_space

# --- config errors ------------------------------------------------------------------------


def _set(path: tuple[str, ...], value):
    def change(table):
        node = table
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return change


def _del(path: tuple[str, ...]):
    def change(table):
        node = table
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return change


LAYER = ("seed", "seq_blocks_2", "config")
ERRORS = [
    ("empty-choices", _set((*LAYER, "weight_width"), []), f"{KEY}.weight_width", "non-empty"),
    ("width-0", _set((*LAYER, "weight_width"), [0, 4]), f"{KEY}.weight_width", "1..32"),
    ("width-33", _set((*LAYER, "data_in_width"), [4, 33]), f"{KEY}.data_in_width", "1..32"),
    ("width-str", _set((*LAYER, "bias_width"), ["8"]), f"{KEY}.bias_width", "1..32"),
    ("width-bool", _set((*LAYER, "bias_width"), [True]), f"{KEY}.bias_width", "1..32"),
    ("width-scalar", _set((*LAYER, "bias_width"), 8), f"{KEY}.bias_width", "list"),
    ("duplicates", _set((*LAYER, "bias_width"), [8, 8]), f"{KEY}.bias_width", "distinct"),
    ("frac-x", _set((*LAYER, "weight_frac_width"), ["x"]), f"{KEY}.weight_frac_width", "NA"),
    ("frac-65", _set((*LAYER, "weight_frac_width"), [65]), f"{KEY}.weight_frac_width", "-64..64"),
    ("name-bad", _set((*LAYER, "name"), ["float"]), f"{KEY}.name", "integer"),
    ("name-missing", _del((*LAYER, "name")), f"{KEY}.name", "required"),
    ("rounding-bad", _set((*LAYER, "rounding"), ["nearest"]), f"{KEY}.rounding", "half_even"),
    (
        "unknown-field",
        _set((*LAYER, "weight_widht"), [4]),
        f"{KEY}.weight_widht",
        "did you mean 'weight_width'",
    ),
    (
        "unknown-layer",
        _set(("seed", "seq_blocks_3"), {"config": {"name": ["NA"]}}),
        "search.search_space.seed.seq_blocks_3",
        "seq_blocks_2",
    ),
    (
        "layer-not-table",
        _set(("seed", "seq_blocks_2"), {"config": {"name": ["NA"]}, "x": 1}),
        "search.search_space.seed.seq_blocks_2",
        "config",
    ),
    ("missing-default", _del(("seed", "default")), "search.search_space.seed.default", "required"),
    ("by-layer", _set(("setup", "by"), "layer"), "search.search_space.setup.by", "name"),
    (
        "setup-unknown-key",
        _set(("setup", "bye"), "name"),
        "search.search_space.setup.bye",
        "unknown key",
    ),
    (
        "unknown-space",
        _set(("name",), "graph/quantize/qat"),
        "search.search_space.name",
        "graph/quantize/mixed_precision_ptq",
    ),
    ("unknown-top-key", _set(("seeds",), {}), "search.search_space.seeds", "did you mean"),
    ("no-seed", _del(("seed",)), "search.search_space.seed", "table"),
]


@pytest.mark.parametrize(
    ("change", "key", "words"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_space_config_errors_name_the_key(change, key, words):
    table = seed_table()
    change(table)
    with pytest.raises(ConfigError) as info:
        parse_space(table, tiny())
    message = str(info.value)
    assert info.value.key == key
    assert message.startswith(f"{key}: ")
    assert words in message


def test_width_error_message_exact():
    table = seed_table()
    table["seed"]["seq_blocks_2"]["config"]["weight_width"] = [0, 4]
    with pytest.raises(ConfigError) as info:
        parse_space(table, tiny())
    assert str(info.value) == (f"{KEY}.weight_width: choices must be integers in 1..32, got [0, 4]")


def test_unknown_layer_name_lists_the_model_layers():
    table = seed_table()
    table["seed"]["fc1"] = {"config": {"name": ["NA"]}}
    with pytest.raises(ConfigError, match=r"seq_blocks_2") as info:
        parse_space(table, tiny())
    assert info.value.key == "search.search_space.seed.fc1"
    with pytest.raises(ConfigError) as info:
        parse_space(table, toy())
    for layer in TOY_LAYERS:
        assert layer in str(info.value)


def test_by_type_refuses_a_layer_name():
    table = seed_table()
    table["setup"] = {"by": "type"}
    with pytest.raises(ConfigError) as info:
        parse_space(table, tiny())
    assert info.value.key == "search.search_space.seed.seq_blocks_2"
    assert "linear" in str(info.value)


@pytest.mark.parametrize("table", [{}, None, []])
def test_empty_space_table(table):
    with pytest.raises(ConfigError, match=r"^search\.search_space: "):
        parse_space(table, tiny())
