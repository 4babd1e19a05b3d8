"""Tests for bitscout.quant.plan: one precedence rule (exact name > type > default) shared by
the search space, the evaluation engine, sensitivity probes and `quantize_model`."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from bitscout.evaluate.engine.candidates import Resolver
from bitscout.quant import LayerQuant, quantize_model, resolve_plan
from bitscout.quant.plan import governing_key
from bitscout.quant.space import SearchSpace

BUILDERS = {
    "linear": lambda: nn.Linear(4, 4),
    "conv1d": lambda: nn.Conv1d(4, 4, 1),
    "conv2d": lambda: nn.Conv2d(4, 4, 1),
}
TYPES = tuple(BUILDERS)
# Names that collide with type names, with `default`, and with each other's fx names.
NAMES = ("linear", "conv1d", "conv2d", "default", "a", "b", "a_b", "fc")


def build(layers: dict[str, str]) -> nn.Module:
    """A model holding a layer of type `layers[path]` at each (dotted) module path."""
    root = nn.Module()
    for path, kind in layers.items():
        parent = root
        *heads, leaf = path.split(".")
        for head in heads:
            if not hasattr(parent, head):
                parent.add_module(head, nn.Module())
            parent = getattr(parent, head)
        parent.add_module(leaf, BUILDERS[kind]())
    return root


def table(width: int) -> dict:
    """A seed table searching the weight width: `width` tells which key configured a layer."""
    return {"name": ["integer"], "weight_width": [width, width + 10]}


def reference_key(path: str, kind: str, keys: set[str], by: str, names: set[str]) -> str:
    """The documented rule, written out independently: by name the module path, then the fx
    name, then the type unless it names a layer, then `default`; by type the type, then
    `default`."""
    fx = path.replace(".", "_")
    if by == "name" and path in keys:
        return path
    if by == "name" and fx in keys:
        return fx
    if kind in keys and (by == "type" or kind not in names):
        return kind
    return "default"


def formats(model: nn.Module, paths: list[str]) -> dict[str, LayerQuant | None]:
    """What `quantize_model` put at each path: the layer's formats, None for a float layer."""
    return {p: getattr(model.get_submodule(p), "quant", None) for p in paths}


def check_agree(model: nn.Module, space: SearchSpace, index: int) -> dict[str, LayerQuant | None]:
    """The space, the engine's Resolver and `quantize_model` resolve candidate `index` alike;
    returns the formats."""
    config = space.config(index)
    resolved = space.resolved(config)
    resolver = Resolver(space)
    assert resolver.plan(resolver.key(config)) == resolved
    assert formats(quantize_model(model, space.plan(config)), list(space.types)) == resolved
    return resolved


def test_a_linear_named_conv1d_takes_the_linear_table_by_type():
    """By type, a Linear whose module is named `conv1d`, beside a real Conv1d, is measured
    and exported with the `linear` table (the engine used the `conv1d` table)."""
    model = build({"conv1d": "linear", "c": "conv1d"})
    tables = {"default": {"name": ["NA"]}, "linear": table(4), "conv1d": table(6)}
    space = SearchSpace(model, "type", tables)
    for index in range(space.size):
        resolved = check_agree(model, space, index)
        assert resolved["conv1d"].weight.width in (4, 14)
        assert resolved["c"].weight.width in (6, 16)


def test_by_name_a_key_that_names_a_layer_is_not_a_type_key():
    model = build({"linear": "conv1d", "fc": "linear"})
    tables = {"default": table(1), "linear": table(5)}
    space = SearchSpace(model, "name", tables)
    resolved = check_agree(model, space, 0)
    assert resolved["linear"].weight.width == 5
    assert resolved["fc"].weight.width == 1
    assert governing_key("fc", "linear", tables, "name", {"linear", "fc"}) == "default"
    assert governing_key("fc", "linear", tables, "name") == "linear"  # no layer named linear


def test_governing_key_without_default_leaves_a_layer_float():
    assert governing_key("x", "conv2d", {"linear"}, "type") is None
    assert resolve_plan({"x": "conv2d"}, {"linear": {"config": {"name": "NA"}}}) == {"x": None}


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, str]:
    """Module paths of one or two parts (no path also a parent of another) -> types."""
    paths = draw(
        st.lists(
            st.lists(st.sampled_from(NAMES), min_size=1, max_size=2).map(".".join),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    paths = [p for p in paths if not any(q.startswith(p + ".") for q in paths)]
    return {p: draw(st.sampled_from(TYPES)) for p in paths}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=layouts(), by=st.sampled_from(["name", "type"]), data=st.data())
def test_space_engine_and_quantize_model_resolve_every_layer_alike(layers, by, data):
    model = build(layers)
    names = set(layers) | {p.replace(".", "_") for p in layers}
    pool = sorted(set(TYPES) | (names if by == "name" else set()))
    keys = data.draw(st.lists(st.sampled_from(pool), unique=True, max_size=6))
    tables = {k: table(i + 1) for i, k in enumerate(["default", *keys])}
    space = SearchSpace(model, by, tables)
    index = data.draw(st.integers(0, space.size - 1))
    resolved = check_agree(model, space, index)
    # Each layer got the table the rule names: its weight width is that table's (+10).
    chosen = space.config(index)
    for path, kind in layers.items():
        key = reference_key(path, kind, set(tables), by, names)
        width = tables[key]["weight_width"][0]
        assert resolved[path].weight.width in (width, width + 10), (path, key, chosen)
    # A plan written with those keys (first choices) resolves the same way when exported.
    plan = {"by": by, **{k: {"config": {"name": "integer", "weight_width": t["weight_width"][0]}}
                         for k, t in tables.items()}}  # fmt: skip
    exported = resolve_plan(model, plan)
    for path, kind in layers.items():
        key = reference_key(path, kind, set(tables), by, names)
        assert exported[path].weight.width == tables[key]["weight_width"][0]


@pytest.mark.parametrize("by", ["name", "type"])
def test_layers_sharing_an_fx_name_are_searched_apart(by):
    """`a.b` and `a_b` share the fx name `a_b`: by name each gets its own dimensions (keyed
    by module path), both configured by the `a_b` table."""
    model = build({"a.b": "linear", "a_b": "conv1d"})
    tables = {"default": table(1), "a_b": table(3)} if by == "name" else {"default": table(1)}
    space = SearchSpace(model, by, tables)
    width = tables["a_b" if by == "name" else "default"]["weight_width"][0]
    for index in range(space.size):
        resolved = check_agree(model, space, index)
        assert {resolved[p].weight.width for p in ("a.b", "a_b")} <= {width, width + 10}
    assert space.size == (4 if by == "name" else 2)


def test_sensitivity_probes_the_layers_the_engine_resolves():
    """Sensitivity's `governed` (searched key -> layers) follows the same rule, by type too."""
    from bitscout.analysis.sensitivity import governed  # the analysis layer, imported late

    model = build({"conv1d": "linear", "c": "conv1d", "linear": "conv2d"})
    for by in ("name", "type"):
        tables = {"default": table(1), "linear": table(4), "conv1d": table(6)}
        space = SearchSpace(model, by, tables)
        resolver = Resolver(space)
        engine = dict(zip(resolver.paths, resolver._governing, strict=True))
        found = governed(space)
        assert sorted(p for paths in found.values() for p in paths) == sorted(engine)
        assert all(engine[p] == key for key, paths in found.items() for p in paths)
    assert governed(SearchSpace(model, "type", tables)) == {
        "linear": ["conv1d"],
        "conv1d": ["c"],
        "default": ["linear"],
    }
