"""Per-layer quantization plans (MASE's `[passes.quantize]` table) and `quantize_model`."""

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from bitscout._core.validate import suggest
from bitscout.errors import ConfigError
from bitscout.quant.catalog import (
    DATAPATH,
    FORMATS,
    TENSORS,
    all_field_names,
    field_names,
    format_names,
)
from bitscout.quant.datapath import exact_frac
from bitscout.quant.formats import NO_FORMAT, REQUIRED, Integer, NumberFormat
from bitscout.quant.layers import QUANT_TYPES, TYPE_NAMES, LayerQuant, to_quant

LAYER_TYPES = tuple(TYPE_NAMES.values())


@dataclass(frozen=True)
class QuantPlan:
    """Formats per layer key: a layer name, a layer type or `default`; None leaves it float."""

    by: Literal["name", "type"] = "name"
    layers: Mapping[str, LayerQuant | None] = field(default_factory=dict)


def parse_layer_config(cfg: Mapping[str, Any], key: str) -> LayerQuant | None:
    """One MASE layer `config` table -> LayerQuant, or None for `name = "NA"`.

    A tensor is quantized when its `<tensor>_width` is given (for a format without a width
    field, binary and ternary: when any of its fields is); else it stays float.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(key, "must be a table", cfg)
    names = format_names()
    if "name" not in cfg:
        raise ConfigError(f"{key}.name", f"is required, one of {names}")
    name = cfg["name"]
    if name not in names:
        raise ConfigError(f"{key}.name", f"must be one of {names}{suggest(str(name), names)}", name)
    known = all_field_names()
    own = [] if name == NO_FORMAT else field_names(FORMATS.get(name))
    for given in cfg:
        if given not in known:
            rule = f"unknown field{suggest(given, own or known)}; {name}'s fields: {', '.join(own)}"
            raise ConfigError(f"{key}.{given}", rule)
        if given != "name" and own and given not in own:
            rule = f"does not apply to format {name!r} (its fields: {', '.join(own)})"
            raise ConfigError(f"{key}.{given}", rule)
    if name == NO_FORMAT:
        return None
    cls = FORMATS.get(name)
    shared = {f.suffix: cfg[f.suffix] for f in cls.FIELDS if f.layer and f.suffix in cfg}
    for f in cls.FIELDS:  # checked even when no tensor is quantized
        if f.suffix in shared and not f.check(shared[f.suffix]):
            raise ConfigError(f"{key}.{f.suffix}", f"must be {f.rule}", shared[f.suffix])
    formats: dict[str, Any] = {t: _tensor_format(cls, cfg, t, shared, key) for t in TENSORS}
    if cls is Integer:
        for tensor in DATAPATH:
            formats[tensor] = _datapath_format(cfg, tensor, formats, shared, key)
    return LayerQuant(**formats)


def _tensor_format(
    cls: type[NumberFormat], cfg: Mapping[str, Any], tensor: str, shared: Mapping[str, Any],
    key: str,
) -> NumberFormat | None:  # fmt: skip
    given = {f.suffix: cfg[f"{tensor}_{f.suffix}"] for f in cls.FIELDS
             if not f.layer and f"{tensor}_{f.suffix}" in cfg}  # fmt: skip
    width = next((f for f in cls.FIELDS if f.suffix == "width"), None)
    needs_width = width is not None and width.default is REQUIRED
    if "width" not in given and (needs_width or not given):
        return None  # float: no width, or (a format without one) none of its fields
    try:
        return cls.parse({**given, **shared})
    except ConfigError as err:
        layer_wide = {f.suffix for f in cls.FIELDS if f.layer}
        field = err.key if err.key in layer_wide else f"{tensor}_{err.key}"
        raise ConfigError(f"{key}.{field}", err.rule, err.value) from err


def _datapath_format(
    cfg: Mapping[str, Any], tensor: str, formats: Mapping[str, Any], shared: Mapping[str, Any],
    key: str,
) -> Integer | None:  # fmt: skip
    if f"{tensor}_width" not in cfg:
        if f"{tensor}_frac_width" in cfg:
            raise ConfigError(f"{key}.{tensor}_frac_width", f"needs {tensor}_width as well")
        return None
    frac = _datapath_frac(cfg, tensor, formats, key)
    values = {"width": cfg[f"{tensor}_width"], "frac_width": "NA" if frac is None else frac}
    try:
        return Integer.parse({**values, **shared})  # type: ignore[return-value]
    except ConfigError as err:
        raise ConfigError(f"{key}.{tensor}_{err.key}", err.rule, err.value) from err


def _datapath_frac(
    cfg: Mapping[str, Any], tensor: str, formats: Mapping[str, Any], key: str
) -> int | None:
    """The frac width of a given `accum` or `result`: as given ("NA" is width // 2, as for
    every MASE width); else the accumulator keeps the exact grid (input frac + weight frac, at
    least the bias frac) and the result the accumulator's."""
    if f"{tensor}_frac_width" in cfg:
        value = cfg[f"{tensor}_frac_width"]
        return None if value == "NA" else value
    accum = formats.get("accum")
    if tensor == "result" and accum is not None:
        return accum.frac_width
    data_in, weight = formats["data_in"], formats["weight"]
    if data_in is None or weight is None:
        rule = "is required when data_in or weight is float (their products have no fixed grid)"
        raise ConfigError(f"{key}.{tensor}_frac_width", rule)
    return exact_frac(data_in, weight, formats["bias"])


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


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Module path -> layer, for every Linear/Conv1d/Conv2d in `model`, in module order."""
    return {path: m for path, m in model.named_modules() if type(m) in QUANT_TYPES}


Layers = Mapping[str, str]  # module path -> layer type ("linear", "conv1d", "conv2d")


def layer_types(model: "nn.Module | Layers") -> dict[str, str]:
    """Path -> type of every quantizable layer, in module order: of a model, or as given (a
    finished run's report knows its layers without the model)."""
    if isinstance(model, Mapping):
        return dict(model)
    return {path: TYPE_NAMES[type(m)] for path, m in quantizable_layers(model).items()}


def fx_name(path: str) -> str:
    """MASE's name for a layer: the torch.fx node name, `seq_blocks.2` -> `seq_blocks_2`."""
    return path.replace(".", "_")


def _key_kind(types: Layers, by: str, name: str, key: str) -> str:
    """Whether plan key `name` denotes a layer path (returned), a type (`type:`) or default."""
    if name == "default":
        return "default"
    if by == "name":
        for path in types:
            if name in (path, fx_name(path)):
                return path
    if name in LAYER_TYPES:
        return f"type:{name}"
    if by == "type":
        raise ConfigError(f"{key}.{name}", f"unknown layer type; known: {', '.join(LAYER_TYPES)}")
    known = [fx_name(p) for p in types]
    raise ConfigError(
        f"{key}.{name}",
        f"unknown layer name; this model's layers: {', '.join(known)} (or a type: "
        f"{', '.join(LAYER_TYPES)})",
    )


def resolve_plan(
    model: "nn.Module | Layers", plan: QuantPlan | Mapping[str, Any], key: str = "passes.quantize"
) -> dict[str, LayerQuant | None]:
    """The formats of every quantizable layer (of a model, or path -> type), by precedence
    exact name > type > default."""
    if not isinstance(plan, QuantPlan):
        plan = parse_plan(plan, key)
    types = layer_types(model)
    kinds = {_key_kind(types, plan.by, name, key): name for name in plan.layers}
    resolved: dict[str, LayerQuant | None] = {}
    for path, kind in types.items():
        name = next((kinds[k] for k in (path, f"type:{kind}", "default") if k in kinds), None)
        quant = None if name is None else plan.layers[name]
        if quant is not None and quant.accum is not None and kind != "linear":
            # hls4ml's convolutions fill their products in an order of their own, so a
            # saturating narrow accumulator could not be modeled exactly.
            rule = f"is modeled on linear layers only ({fx_name(path)} is a {kind}); a "
            raise ConfigError(f"{key}.{name}.config.accum_width", rule + "result_width can be set")
        resolved[path] = quant
    return resolved


def quantize_model(model: nn.Module, plan: QuantPlan | Mapping[str, Any]) -> nn.Module:
    """A new model with each layer quantized as `plan` says; `model` itself is never modified.

    `plan` is a QuantPlan or a raw MASE `[passes.quantize]` table.
    """
    resolved = resolve_plan(model, plan)
    new = copy.deepcopy(model)
    for path, quant in resolved.items():
        if quant is None:
            continue
        parent_path, _, child = path.rpartition(".")
        parent = new.get_submodule(parent_path)
        setattr(parent, child, to_quant(parent.get_submodule(child), quant))
    return new
