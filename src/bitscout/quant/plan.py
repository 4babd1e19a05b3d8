"""Quantization plans and the one rule that says which plan key configures a layer.

A plan (MASE's `[passes.quantize]` table, or a search space's seed) holds tables under
keys that are layer names, layer types or `default`. The space, the evaluation engine,
sensitivity probes and `quantize_model` all ask `governing_key` which key configures a
layer, so what is measured is what is exported.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from bitscout.errors import ConfigError
from bitscout.quant.layers import TYPE_NAMES, LayerQuant, quantizable_layers, type_names
from bitscout.quant.tables import parse_layer_config

DEFAULT = "default"
Layers = Mapping[str, str]  # module path -> layer type ("linear", "conv1d", "conv2d", ...)


@dataclass(frozen=True)
class QuantPlan:
    """Formats per layer key: a layer name, a layer type or `default`; None leaves it float.

    A layer takes the formats of its exact name, else of its type, else of `default`; a
    layer no key governs stays float.

    Attributes:
        by: "name": keys are layer names (the module path, `seq_blocks.2`, or the torch.fx
            name, `seq_blocks_2`), layer types or `default`; "type": only layer types (e.g.
            "linear") and `default` count.
        layers: key -> the layer's `LayerQuant`, or None to leave it float.
    """

    by: Literal["name", "type"] = "name"
    layers: Mapping[str, LayerQuant | None] = field(default_factory=dict)


def fx_name(path: str) -> str:
    """MASE's name for a layer: the torch.fx node name, `seq_blocks.2` -> `seq_blocks_2`."""
    return path.replace(".", "_")


def layer_types(model: "nn.Module | Layers") -> dict[str, str]:
    """Path -> type of every quantizable layer, in module order: of a model, or as given (a
    finished run's report knows its layers without the model)."""
    if isinstance(model, Mapping):
        return dict(model)
    return {path: TYPE_NAMES[type(m)] for path, m in quantizable_layers(model).items()}


def layer_names(types: Layers) -> frozenset[str]:
    """Every name a plan key may use for a layer: its module path and its fx name."""
    return frozenset(types) | frozenset(fx_name(p) for p in types)


def governing_key(
    path: str, kind: str, keys: Collection[str], by: str, names: Collection[str] = ()
) -> str | None:
    """The key of `keys` that configures layer `path` of type `kind`: exact name (module path,
    then fx name) > type > `default`; None when none does (the layer stays float).

    By type only type keys and `default` count, even where a layer's name equals a key. By
    name a key that names a layer (`names`: every layer's path and fx name) is that layer's
    alone, never also a type key: one key, one meaning.
    """
    if by == "name":
        for name in (path, fx_name(path)):
            if name in keys:
                return name
    if kind in keys and (by == "type" or kind not in names):
        return kind
    return DEFAULT if DEFAULT in keys else None


def governing_keys(types: Layers, keys: Collection[str], by: str) -> dict[str, str | None]:
    """`governing_key` of every layer of `types` (path -> type), by path."""
    names = layer_names(types)
    return {path: governing_key(path, kind, keys, by, names) for path, kind in types.items()}


def check_plan_key(types: Layers, by: str, name: str, key: str) -> None:
    """Refuse a plan key that is no layer name (by name), no layer type and not `default`."""
    known_types = type_names()
    if name == DEFAULT or name in known_types or (by == "name" and name in layer_names(types)):
        return
    if by == "type":
        raise ConfigError(f"{key}.{name}", f"unknown layer type; known: {', '.join(known_types)}")
    known = [fx_name(p) for p in types]
    raise ConfigError(
        f"{key}.{name}",
        f"unknown layer name; this model's layers: {', '.join(known)} (or a type: "
        f"{', '.join(known_types)})",
    )


def parse_plan(table: Mapping[str, Any], key: str = "passes.quantize") -> QuantPlan:
    """MASE's `[passes.quantize]` table: `by`, `default` and per-layer `<key>.config` tables."""
    by = table.get("by", "name")
    if by not in ("name", "type"):
        raise ConfigError(f"{key}.by", 'must be "name" or "type"', by)
    layers: dict[str, LayerQuant | None] = {}
    for name, entry in table.items():
        if name in ("by", "report"):
            continue
        if not isinstance(entry, Mapping) or set(entry) != {"config"}:
            raise ConfigError(f"{key}.{name}", "must be a table holding exactly one `config` table")
        layers[name] = parse_layer_config(entry["config"], f"{key}.{name}.config")
    return QuantPlan(by=by, layers=layers)


def resolve_plan(
    model: "nn.Module | Layers", plan: QuantPlan | Mapping[str, Any], key: str = "passes.quantize"
) -> dict[str, LayerQuant | None]:
    """The formats of every quantizable layer (of a model, or path -> type), by precedence
    exact name > type > default (`governing_key`)."""
    if not isinstance(plan, QuantPlan):
        plan = parse_plan(plan, key)
    types = layer_types(model)
    for name in plan.layers:
        check_plan_key(types, plan.by, name, key)
    resolved: dict[str, LayerQuant | None] = {}
    for path, gov in governing_keys(types, plan.layers, plan.by).items():
        quant = None if gov is None else plan.layers[gov]
        kind = types[path]
        if quant is not None and quant.accum is not None and kind != "linear":
            # hls4ml's convolutions fill their products in an order of their own, so a
            # saturating narrow accumulator could not be modeled exactly.
            rule = f"is modeled on linear layers only ({fx_name(path)} is a {kind}); a "
            raise ConfigError(f"{key}.{gov}.config.accum_width", rule + "result_width can be set")
        resolved[path] = quant
    return resolved
