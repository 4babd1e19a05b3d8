"""Config files: MASE-layout TOML loaded into a validated, frozen `Config`."""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bitscout._core.toml import read_toml
from bitscout._core.validate import SEED_MAX, check_keys, finite_float
from bitscout.errors import ConfigError
from bitscout.quant.apply import QuantPlan, parse_plan
from bitscout.zoo.plugins import resolve_spec

# MASE keys that a Lab config carries but bitscout has no use for: accepted, ignored.
MASE_IGNORED = (
    "task", "accelerator", "project", "log_every_n_steps", "load_name", "load_type",
    "is_pretrained", "num_workers", "num_devices", "transform",
)  # fmt: skip
TOP_LEVEL = (
    "model", "dataset", "dataset_path", "dataset_options", "model_options", "batch_size",
    "max_epochs", "learning_rate", "weight_decay", "seed", "passes", "search",
) + MASE_IGNORED  # fmt: skip


def _number(
    raw: Mapping[str, Any],
    name: str,
    default: float,
    kind: type,
    low: float,
    high: float = math.inf,
) -> Any:
    value = raw.get(name, default)
    ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
    ok = ok and not isinstance(value, bool)
    if ok and kind is float:
        # TOML allows inf, nan and integers too large for a float; none makes a usable rate.
        value = finite_float(value)
        if value is None:
            raise ConfigError(name, f"must be a finite number >= {low}", raw.get(name))
    if not ok or not low <= value <= high:
        noun = "an integer" if kind is int else "a number"
        too_big = ok and value > high  # the upper bound only matters (and is shown) when hit
        bound = f"in {low}..{high}" if too_big else f">= {low}"
        raise ConfigError(name, f"must be {noun} {bound}", value)
    return kind(value)


def _string(raw: Mapping[str, Any], name: str, default: str | None) -> str | None:
    value = raw.get(name, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(name, "must be a string", value)
    return value


def _name(raw: Mapping[str, Any], name: str, default: str) -> str:
    """A registry name: an empty string is kept so the lookup rejects it and lists the known
    names (it used to fall back to the default silently)."""
    value = _string(raw, name, default)
    return default if value is None else value


def _table(raw: Mapping[str, Any], name: str, prefix: str = "") -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{prefix}{name}", "must be a table", value)
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class Config:
    """One run's settings. `search` stays a raw table; the search package validates it."""

    model: str = "mlp"
    dataset: str = "digits"
    dataset_path: str | None = None
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    model_options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    max_epochs: int = 30
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    quantize: QuantPlan | None = None
    search: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: Path | None = None) -> "Config":
        check_keys(raw, TOP_LEVEL, "")
        passes = _table(raw, "passes")
        check_keys(passes, ("quantize",), "passes")
        plan = parse_plan(_table(passes, "quantize", "passes.")) if "quantize" in passes else None
        dataset_path = _string(raw, "dataset_path", None)
        if dataset_path and source is not None and not Path(dataset_path).is_absolute():
            dataset_path = str((source.parent / dataset_path).resolve())
        base = None if source is None else source.parent
        return cls(
            model=resolve_spec(_name(raw, "model", cls.model), base),
            dataset=resolve_spec(_name(raw, "dataset", cls.dataset), base),
            dataset_path=dataset_path,
            dataset_options=_table(raw, "dataset_options"),
            model_options=_table(raw, "model_options"),
            batch_size=_number(raw, "batch_size", cls.batch_size, int, 1),
            max_epochs=_number(raw, "max_epochs", cls.max_epochs, int, 1),
            learning_rate=_number(raw, "learning_rate", cls.learning_rate, float, 0.0),
            weight_decay=_number(raw, "weight_decay", cls.weight_decay, float, 0.0),
            seed=_number(raw, "seed", cls.seed, int, 0, SEED_MAX),
            quantize=plan,
            search=_table(raw, "search"),
            source=source,
        )


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; errors name the file and the key."""
    path = Path(path)
    raw = read_toml(path)
    try:
        return Config.from_dict(raw, source=path)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err.key}", err.rule, err.value) from err
