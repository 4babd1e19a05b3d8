"""The search space: MASE's `[search.search_space]` seed tables as named categorical
dimensions, with the number format itself a dimension when `name` lists several.

A layer key's candidates are, for each format in `name` order, every combination of the
fields that format takes, so a space's size is a sum over formats, not a product of every
field; a field that only some formats take is searched only when one of them is chosen.
A field's choices may differ by format (`weight_width = {integer = [4, 8], mxint = [8]}`),
and where a key lists several formats the candidates that are no valid format are skipped
and named in `SearchSpace.skipped_note` (`bitscout.quant.choices`).
"""

import itertools
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from bitscout._core.validate import check_keys, unknown
from bitscout.errors import ConfigError
from bitscout.quant.catalog import (
    FORMATS,
    TENSORS,
    all_field_names,
    field_names,
    field_spec,
    format_names,
)
from bitscout.quant.choices import (
    MAX_COMBINATIONS,
    Choice,
    Choices,
    Dimension,
    FormatChoices,
    LayerChoices,
    skipped_note,
)
from bitscout.quant.formats import NO_FORMAT, NumberFormat
from bitscout.quant.layers import LayerQuant, type_names
from bitscout.quant.plan import (
    DEFAULT,
    Layers,
    QuantPlan,
    fx_name,
    governing_keys,
    layer_names,
    layer_types,
    resolve_plan,
)
from bitscout.quant.tables import parse_layer_config

SPACE_NAMES = ("graph/quantize/mixed_precision_ptq",)
Config = dict[str, Choice]  # dimension name -> chosen value


def _choices(value: object, key: str) -> tuple[Choice, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(key, "must be a non-empty list of choices", value)
    plain = [(type(v), v) for v in value if isinstance(v, int | str | bool | float)]
    if len(set(plain)) != len(plain):
        raise ConfigError(key, "choices must be distinct", value)
    return tuple(value)


def _formats(cfg: Mapping[str, Any], key: str) -> tuple[str, ...]:
    if "name" not in cfg:
        raise ConfigError(f"{key}.name", 'is required, e.g. ["integer"]')
    names = _choices(cfg["name"], f"{key}.name")
    known = format_names()
    if not all(isinstance(n, str) and n in known for n in names):
        raise ConfigError(f"{key}.name", f"choices must be among {known}", list(names))
    return names  # type: ignore[return-value]


def _users(field: str, names: Sequence[str]) -> list[str]:
    """The formats of `names` that take `field`."""
    return [n for n in names if n != NO_FORMAT and field in field_names(FORMATS.get(n))]


def _check_field(field: str, choices: Sequence[Choice], names: Sequence[str], key: str) -> None:
    """Every choice of `field` valid for every listed format that takes it; with several
    formats, for at least one of them (the others skip it)."""
    users = _users(field, names)
    if not users:
        own = {n: field_names(FORMATS.get(n)) for n in names if n != NO_FORMAT}
        listed = "; ".join(f"{n}: {', '.join(f)}" for n, f in own.items()) or "none (NA)"
        raise ConfigError(key, f"applies to none of the formats in name (their fields: {listed})")
    specs = {n: s for n in users if (s := field_spec(FORMATS.get(n), field)) is not None}
    if all(any(s.check(c) for s in specs.values()) for c in choices):
        return  # a choice that only some formats take is skipped for the others
    if len(specs) == 1:
        raise ConfigError(key, f"choices must be {next(iter(specs.values())).rules}", list(choices))
    rules = "; ".join(f"{n}: {s.rules}" for n, s in specs.items())
    raise ConfigError(key, f"each choice must suit a format in name ({rules})", list(choices))


def _field_choices(field: str, value: object, names: Sequence[str], key: str) -> Choices:
    """A field's choices: one list, or (`{integer = [4, 8], mxint = [8]}`) one per format."""
    if not isinstance(value, Mapping):
        choices = _choices(value, key)
        _check_field(field, choices, names, key)
        return choices
    users = _users(field, names)
    if not value:
        raise ConfigError(key, "must be a list of choices or a table of them by format", value)
    per: dict[str, tuple[Choice, ...]] = {}
    for name, listed in value.items():
        if name not in users:
            rule = f"is not a format in name that takes {field} (those: {', '.join(users)})"
            raise ConfigError(f"{key}.{name}", rule)
        per[name] = _choices(listed, f"{key}.{name}")
        _check_field(field, per[name], [name], f"{key}.{name}")
    return per


def _check_combinations(
    cls: type[NumberFormat], table: Mapping[str, tuple[Choice, ...]], key: str
) -> None:
    """Every combination of a tensor's fields is a valid format (a minifloat with no
    mantissa bits left, say, is refused here rather than mid-search)."""
    shared = {f.suffix: table[f.suffix] for f in cls.FIELDS if f.layer and f.suffix in table}
    for tensor in TENSORS:
        fields = {f.suffix: table[f"{tensor}_{f.suffix}"] for f in cls.FIELDS
                  if not f.layer and f"{tensor}_{f.suffix}" in table}  # fmt: skip
        if not fields:
            continue
        options = {**fields, **shared}
        if math.prod(len(c) for c in options.values()) > MAX_COMBINATIONS:
            continue
        for combo in itertools.product(*options.values()):
            values = dict(zip(options, combo, strict=True))
            try:
                cls.parse(values)
            except ConfigError as err:
                shown = ", ".join(f"{tensor}_{k} = {v!r}" for k, v in values.items())
                raise ConfigError(f"{key}.{tensor}_{err.key}", f"{cls.name} with {shown}: "
                                  f"{err.rule}", err.value) from err  # fmt: skip


def _seed_tables(seed: Mapping[str, Any], key: str) -> dict[str, dict[str, Choices]]:
    """Validate `seed.<layer>.config` tables into field -> choices."""
    tables: dict[str, dict[str, Choices]] = {}
    for layer, entry in seed.items():
        if not isinstance(entry, Mapping) or set(entry) != {"config"}:
            raise ConfigError(f"{key}.{layer}", "must be a table holding one `config` table")
        cfg, at = entry["config"], f"{key}.{layer}.config"
        if not isinstance(cfg, Mapping):
            raise ConfigError(at, "must be a table", cfg)
        check_keys(cfg, tuple(all_field_names()), at)
        names = _formats(cfg, at)
        table: dict[str, Choices] = {"name": names}
        for field, value in cfg.items():
            if field != "name":
                table[field] = _field_choices(field, value, names, f"{at}.{field}")
        for fc in LayerChoices.of(layer, table).formats:
            _check_format(fc, len(names) > 1, at)
        tables[layer] = table
    return tables


def _check_format(fc: FormatChoices, mixed: bool, at: str) -> None:
    """Refuse a format with no valid candidate, or (one format per key, or too many
    combinations to list) with an invalid one; check the structure of its first table."""
    if fc.name == NO_FORMAT:
        return
    cls = FORMATS.get(fc.name)
    if not mixed or fc.valid is None or fc.count == 0:
        _check_combinations(cls, fc.fields, at)  # names the field when every candidate fails
    if fc.count == 0:
        raise ConfigError(at, f"leaves {fc.name} no valid candidate; e.g. {fc.example}")
    parse_layer_config(fc.table(fc.values(0)), at)  # structural errors (accum, ...)


class SearchSpace:
    """Categorical dimensions over per-layer quantization fields, in model order.

    Candidates are numbered in mixed radix over the layer keys (each key's candidates in
    format order, fields last-fastest), the last key varying fastest, so consecutive indexes
    share the longest prefix of (earlier) layer configs.
    """

    def __init__(
        self,
        model: nn.Module | Layers,
        by: str,
        tables: Mapping[str, Mapping[str, Any]],
        key: str = "search.search_space.seed",
    ) -> None:
        self.by = by
        self.types = layer_types(model)  # path -> type of each quantizable layer
        self.tables = {k: {f: _frozen(c) for f, c in t.items()} for k, t in tables.items()}
        self.layer_keys = self._layer_keys(tables, key)
        self.layers = tuple(LayerChoices.of(k, self.tables[t]) for k, t in self.layer_keys.items())
        self.fields = {lc.key: dict(lc.table) for lc in self.layers}
        self.dimensions = tuple(d for lc in self.layers for d in lc.dimensions())
        self.size = math.prod(lc.size for lc in self.layers)
        # Candidates of mixed-format keys that are no valid format, skipped (not refused)
        raw = math.prod(lc.raw_size for lc in self.layers)
        self.skipped = raw - self.size
        self.skipped_note = skipped_note(self.layers, self.skipped, raw)

    def _layer_keys(self, tables: Mapping[str, Any], key: str) -> dict[str, str]:
        """Plan key (layer fx name, or type) -> the seed table that configures it."""
        names, types = layer_names(self.types), type_names()
        for k in tables:
            if not (k == DEFAULT or k in types or (self.by == "name" and k in names)):
                what = "layer name" if self.by == "name" else "layer type"
                known = (
                    list(dict.fromkeys(map(fx_name, self.types)))
                    if self.by == "name"
                    else list(types)
                )
                raise ConfigError(f"{key}.{k}", unknown(what, k, known))
        if DEFAULT not in tables:
            raise ConfigError(f"{key}.{DEFAULT}", 'is required (e.g. name = ["NA"])')
        governing = {
            p: k or DEFAULT for p, k in governing_keys(self.types, tables, self.by).items()
        }
        if self.by == "type":
            return {k: k for k in dict.fromkeys(governing.values())}
        # A layer's key is its fx name, or its path where layers share an fx name (a.b, a_b)
        fx = Counter(map(fx_name, self.types))
        return {(p if fx[fx_name(p)] > 1 else fx_name(p)): k for p, k in governing.items()}

    @property
    def mixed(self) -> bool:
        """Whether some layer key searches over several formats (conditional dimensions)."""
        return any(len(lc.formats) > 1 for lc in self.layers)

    def table(self) -> dict[str, Any]:
        """The space as a `[search.search_space]` table (what `parse_space` reads back)."""
        seed = {
            k: {"config": {f: _listed(c) for f, c in t.items()}} for k, t in self.tables.items()
        }
        return {"setup": {"by": self.by}, "seed": seed}

    def invalid(self, config: Mapping[str, Choice]) -> str | None:
        """Why `config` (say, one drawn a dimension at a time) is no candidate of the space,
        or None: a mixed-format key's dimensions can combine into a skipped candidate."""
        for lc in self.layers:
            try:
                lc.index(self.values_of(lc, config))
            except ValueError as err:
                return str(err)
        return None

    def config(self, index: int) -> Config:
        """The candidate numbered `index` (0 <= index < size): only the dimensions that apply."""
        if not 0 <= index < self.size:
            raise IndexError(f"candidate index must be in 0..{self.size - 1}, got {index}")
        per_key = []
        for lc in reversed(self.layers):
            index, digit = divmod(index, lc.size)
            per_key.append((lc, lc.values(digit)))
        config: Config = {}
        for lc, values in reversed(per_key):
            config.update(self._named(lc, values))
        return config

    def _named(self, lc: LayerChoices, values: Mapping[str, Choice]) -> Config:
        dims = [d for d in lc.dimensions() if d.field in values]
        return {d.name: values[d.field] for d in dims}

    def columns(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """`config` of many candidates at once, by dimension: a column of choices each ("" where
        the candidate's format does not take the field); integer columns as int32."""
        columns: dict[str, np.ndarray] = {}
        rest = np.asarray(indices, dtype=np.int64)
        for lc in reversed(self.layers):
            rest, digit = np.divmod(rest, lc.size)
            named = [self._named(lc, lc.values(d)) for d in range(lc.size)]
            for d in lc.dimensions():
                lookup = [n.get(d.name, "") for n in named]
                whole = all(isinstance(v, int) and not isinstance(v, bool) for v in lookup)
                table = np.array(lookup, dtype=np.int32 if whole else object)
                columns[d.name] = table[digit]
        return {d.name: columns[d.name] for d in self.dimensions}

    def index(self, config: Mapping[str, Choice]) -> int:
        """The number of candidate `config` (inverse of `config`)."""
        index = 0
        for lc in self.layers:
            index = index * lc.size + lc.index(self.values_of(lc, config))
        return index

    def values_of(self, lc: LayerChoices, config: Mapping[str, Choice]) -> dict[str, Choice]:
        """`config`'s values for layer key `lc`, by field."""
        prefix = f"{lc.key}/"
        return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}

    def draw(self, pick: Callable[[Dimension], Choice]) -> Config:
        """A config built one dimension at a time by `pick` (an Optuna trial's suggest): a
        field searched under some formats only is asked for when one of them is chosen. In a
        space that skipped candidates the result may be one of them: see `invalid`."""
        config: Config = {}
        for d in self.dimensions:
            if not d.formats or config.get(f"{d.layer}/name") in d.formats:
                config[d.name] = pick(d)
        return config

    def layer_configs(self, config: Mapping[str, Choice]) -> dict[str, dict[str, Choice]]:
        """Each layer key's full MASE config table (searched and fixed fields) for `config`."""
        return {lc.key: lc.table_for(self.values_of(lc, config)) for lc in self.layers}

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
        raise ConfigError(f"{key}.name", unknown("search space", name, SPACE_NAMES), name)
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


def _frozen(choices: Any) -> Choices:
    if isinstance(choices, Mapping):
        return {name: tuple(c) for name, c in choices.items()}
    return tuple(choices)


def _listed(choices: Choices) -> list[Choice] | dict[str, list[Choice]]:
    if isinstance(choices, Mapping):
        return {name: list(c) for name, c in choices.items()}
    return list(choices)
