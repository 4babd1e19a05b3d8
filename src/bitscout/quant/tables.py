"""A MASE layer `config` table (`name`, `<tensor>_width`, ...) -> the layer's formats."""

from collections.abc import Mapping
from typing import Any

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
from bitscout.quant.layers import LayerQuant


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
    formats: dict[str, Any] = {t: tensor_format(cls, cfg, t, shared, key) for t in TENSORS}
    if cls is Integer:
        for tensor in DATAPATH:
            formats[tensor] = _datapath_format(cfg, tensor, formats, shared, key)
    return LayerQuant(**formats)


def tensor_format(
    cls: type[NumberFormat], cfg: Mapping[str, Any], tensor: str, shared: Mapping[str, Any],
    key: str,
) -> NumberFormat | None:  # fmt: skip
    """`tensor`'s format in layer table `cfg` of format `cls` (None: float); a bad value is a
    ConfigError keyed `<key>.<field>`."""
    given = {f.suffix: cfg[f"{tensor}_{f.suffix}"] for f in cls.FIELDS
             if not f.layer and f"{tensor}_{f.suffix}" in cfg}  # fmt: skip
    own = own_layer_fields(cls, cfg, tensor, key)
    width = next((f for f in cls.FIELDS if f.suffix == "width"), None)
    needs_width = width is not None and width.default is REQUIRED
    if "width" not in given and (needs_width or not given):
        return None  # float: no width, or (a format without one) none of its fields
    try:
        return cls.parse({**given, **shared, **own})
    except ConfigError as err:
        layer_wide = {f.suffix for f in cls.FIELDS if f.layer}
        field = err.key if err.key in layer_wide else f"{tensor}_{err.key}"
        raise ConfigError(f"{key}.{field}", err.rule, err.value) from err


def own_layer_fields(
    cls: type[NumberFormat], cfg: Mapping[str, Any], tensor: str, key: str
) -> dict[str, Any]:
    """`tensor`'s own values of layer-wide fields (`weight_rounding` over `rounding`),
    checked under their own key."""
    own = {}
    for f in cls.FIELDS:
        name = f"{tensor}_{f.suffix}"
        if f.layer and name in cfg:
            if not f.check(cfg[name]):
                raise ConfigError(f"{key}.{name}", f"must be {f.rule}", cfg[name])
            own[f.suffix] = cfg[name]
    return own


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
    own = own_layer_fields(Integer, cfg, tensor, key)
    try:
        return Integer.parse({**values, **shared, **own})  # type: ignore[return-value]
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
    accum_tensor, result_tensor = DATAPATH
    accum = formats.get(accum_tensor)
    if tensor == result_tensor and accum is not None:
        return accum.frac_width
    data_in, weight, bias = (formats[t] for t in TENSORS)
    if data_in is None or weight is None:
        rule = "is required when data_in or weight is float (their products have no fixed grid)"
        raise ConfigError(f"{key}.{tensor}_frac_width", rule)
    return exact_frac(data_in, weight, bias)
