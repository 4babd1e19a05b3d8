"""The search space: MASE's `[search.search_space]` seed tables as named categorical dimensions."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from bitscout.errors import ConfigError
from bitscout.quant.apply import (
    LAYER_FIELDS,
    LAYER_TYPES,
    Layers,
    QuantPlan,
    fx_name,
    layer_types,
    parse_layer_config,
    resolve_plan,
)  # fmt: skip
from bitscout.quant.formats import OVERFLOWS, ROUNDINGS
from bitscout.quant.layers import LayerQuant
from bitscout.validate import check_keys

SPACE_NAMES = ("graph/quantize/mixed_precision_ptq",)
Choice = int | str
Config = dict[str, Choice]  # dimension name -> chosen value


def _valid(field: str, value: object) -> bool:
    if field == "name":
        return value in ("integer", "NA")
    if field == "rounding":
        return value in ROUNDINGS
    if field == "overflow":
        return value in OVERFLOWS
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if field.endswith("frac_width"):
        return value == "NA" or (is_int and -64 <= value <= 64)  # type: ignore[operator]
    return is_int and 1 <= value <= 32  # type: ignore[operator]


RULES = {
    "name": 'choices must be "integer" or "NA"',
    "rounding": f"choices must be among {list(ROUNDINGS)}",
    "overflow": f"choices must be among {list(OVERFLOWS)}",
    "frac_width": 'choices must be integers in -64..64 or "NA"',
    "width": "choices must be integers in 1..32",
}


def _choices(field: str, value: object, key: str) -> tuple[Choice, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, "must be a non-empty list of choices", value)
    if not all(_valid(field, v) for v in value):
        rule = RULES.get(field) or RULES["frac_width" if "frac" in field else "width"]
        raise ConfigError(key, rule, value)
    if len(set(value)) != len(value):
        raise ConfigError(key, "choices must be distinct", value)
    return tuple(value)


@dataclass(frozen=True)
class Dimension:
    """One searched field of one layer key; named `<layer>/<field>`."""

    layer: str
    field: str
    choices: tuple[Choice, ...]

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.field}"


def _seed_tables(seed: Mapping[str, Any], key: str) -> dict[str, dict[str, tuple[Choice, ...]]]:
    """Validate `seed.<layer>.config` tables into field -> choices."""
    tables: dict[str, dict[str, tuple[Choice, ...]]] = {}
    for layer, entry in seed.items():
        if not isinstance(entry, Mapping) or set(entry) != {"config"}:
            raise ConfigError(f"{key}.{layer}", "must be a table holding one `config` table")
        cfg = entry["config"]
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{key}.{layer}.config", "must be a table", cfg)
        check_keys(cfg, LAYER_FIELDS, f"{key}.{layer}.config")
        if "name" not in cfg:
            raise ConfigError(f"{key}.{layer}.config.name", 'is required, e.g. ["integer"]')
        tables[layer] = {f: _choices(f, v, f"{key}.{layer}.config.{f}") for f, v in cfg.items()}
    return tables


class SearchSpace:
    """Categorical dimensions over per-layer quantization fields, in model order.

    Candidates are numbered in mixed radix with the last dimension varying fastest, so
    consecutive indexes share the longest prefix of (earlier) layer configs.
    """

    def __init__(
        self,
        model: nn.Module | Layers,
        by: str,
        tables: Mapping[str, Mapping[str, Sequence]],
        key: str = "search.search_space.seed",
    ) -> None:
        self.by = by
        self.types = layer_types(model)  # path -> type of each quantizable layer
        self.tables = {k: {f: tuple(c) for f, c in t.items()} for k, t in tables.items()}
        self.layer_keys = self._layer_keys(tables, key)
        self.fields: dict[str, dict[str, tuple[Choice, ...]]] = {}
        for layer_key, table_key in self.layer_keys.items():
            self.fields[layer_key] = {f: tuple(c) for f, c in tables[table_key].items()}
        self.dimensions = tuple(
            Dimension(layer, f, choices)
            for layer, fields in self.fields.items()
            for f, choices in fields.items()
            if len(choices) > 1
        )
        self.size = math.prod(len(d.choices) for d in self.dimensions)

    def _layer_keys(self, tables: Mapping[str, Any], key: str) -> dict[str, str]:
        """Plan key (layer fx name, or type) -> the seed table that configures it."""
        names = {fx_name(p): p for p in self.types}
        types = list(self.types.values())
        for k in tables:
            ok = (
                k == "default"
                or k in LAYER_TYPES
                or (self.by == "name" and (k in names or k in names.values()))
            )
            if not ok:
                what = "layer name" if self.by == "name" else "layer type"
                known = list(names) if self.by == "name" else list(LAYER_TYPES)
                raise ConfigError(f"{key}.{k}", f"unknown {what}; known: {', '.join(known)}")
        if "default" not in tables:
            raise ConfigError(f"{key}.default", 'is required (e.g. name = ["NA"])')
        if self.by == "type":
            keys = [t if t in tables else "default" for t in types]
            return {k: k for k in dict.fromkeys(keys)}
        found = {}
        for fx, path in names.items():
            t = self.types[path]
            found[fx] = next(k for k in (fx, path, t, "default") if k in tables)
        return found

    def table(self) -> dict[str, Any]:
        """The space as a `[search.search_space]` table (what `parse_space` reads back)."""
        seed = {k: {"config": {f: list(c) for f, c in t.items()}} for k, t in self.tables.items()}
        return {"setup": {"by": self.by}, "seed": seed}

    def config(self, index: int) -> Config:
        """The candidate numbered `index` (0 <= index < size)."""
        if not 0 <= index < self.size:
            raise IndexError(f"candidate index must be in 0..{self.size - 1}, got {index}")
        digits: Config = {}
        for dim in reversed(self.dimensions):
            index, digit = divmod(index, len(dim.choices))
            digits[dim.name] = dim.choices[digit]
        return {d.name: digits[d.name] for d in self.dimensions}

    def index(self, config: Mapping[str, Choice]) -> int:
        """The number of candidate `config` (inverse of `config`)."""
        index = 0
        for dim in self.dimensions:
            if config.get(dim.name) not in dim.choices:
                raise ValueError(f"{dim.name}: {config.get(dim.name)!r} is not a choice")
            index = index * len(dim.choices) + dim.choices.index(config[dim.name])
        return index

    def layer_configs(self, config: Mapping[str, Choice]) -> dict[str, dict[str, Choice]]:
        """Each layer key's full MASE config table (searched and fixed fields) for `config`."""
        return {
            layer: {f: config.get(f"{layer}/{f}", choices[0]) for f, choices in fields.items()}
            for layer, fields in self.fields.items()
        }

    def plan(self, config: Mapping[str, Choice]) -> QuantPlan:
        """The plan that `quantize_model` applies for candidate `config`."""
        layers = {k: parse_layer_config(v, k) for k, v in self.layer_configs(config).items()}
        return QuantPlan(by=self.by, layers=layers)  # type: ignore[arg-type]

    def resolved(self, config: Mapping[str, Choice]) -> dict[str, LayerQuant | None]:
        """Formats per layer path: the canonical identity of a candidate (used as cache key)."""
        return resolve_plan(self.types, self.plan(config))


def parse_space(
    table: Mapping[str, Any], model: nn.Module | Layers, key: str = "search.search_space"
) -> SearchSpace:
    """Build a SearchSpace from MASE's `[search.search_space]` table."""
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(key, "table is required")
    check_keys(table, ("name", "setup", "seed"), key)
    name = table.get("name", SPACE_NAMES[0])
    if name not in SPACE_NAMES:
        raise ConfigError(
            f"{key}.name", f"unknown search space; known: {', '.join(SPACE_NAMES)}", name
        )
    setup = table.get("setup", {})
    if not isinstance(setup, Mapping):
        raise ConfigError(f"{key}.setup", "must be a table", setup)
    check_keys(setup, ("by",), f"{key}.setup")
    by = setup.get("by", "name")
    if by not in ("name", "type"):
        raise ConfigError(f"{key}.setup.by", 'must be "name" or "type"', by)
    seed = table.get("seed")
    if not isinstance(seed, Mapping) or not seed:
        raise ConfigError(f"{key}.seed", "must be a table of per-layer `config` tables", seed)
    return SearchSpace(model, by, _seed_tables(seed, f"{key}.seed"), f"{key}.seed")
