"""_core/validate.py: one wording for every unknown name, wherever it is looked up."""

import pytest

from bitscout._core.registry import Registry
from bitscout._core.validate import check_keys, unknown
from bitscout.errors import ConfigError


def test_one_wording_with_a_suggestion_only_when_a_name_is_close():
    assert unknown("metric", "acuracy", ["accuracy", "loss"]) == (
        "unknown metric; did you mean 'accuracy'?; known: accuracy, loss"
    )
    assert unknown("metric", "zzz", ["accuracy", "loss"]) == "unknown metric; known: accuracy, loss"
    assert unknown("option for mlp", "depth", []) == "unknown option for mlp; known: none"
    assert unknown("metric", 3, ["accuracy"]) == "unknown metric; known: accuracy"


def test_registries_and_tables_say_it_the_same_way():
    kinds: Registry[int] = Registry("sampler")
    kinds.register("tpe")(1)
    kinds.register("random")(2)
    with pytest.raises(ConfigError) as registry:
        kinds.get("tpee")
    with pytest.raises(ConfigError) as table:
        check_keys({"tpee": 1}, ("random", "tpe"), "setup")
    assert str(registry.value) == "sampler: " + unknown("sampler", "tpee", ["random", "tpe"]) + (
        ", got 'tpee'"
    )
    assert str(table.value) == "setup.tpee: " + unknown("key", "tpee", ("random", "tpe"))
