"""The Python door's `space=` and `metrics=` arguments, read once for `bitscout.search`,
`bitscout.sensitivity` and `bitscout.compare` (below the public functions, so analysis/
needs nothing of api.py)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from bitscout._core.toml import read_toml
from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import METRICS, Metric, user_metric
from bitscout.quant.space import SearchSpace, parse_space


def read_space(space: Mapping[str, Any] | str | Path, model: nn.Module) -> SearchSpace:
    """`[search.search_space]` as a dict, or a TOML file holding it (a whole config, or the
    table alone)."""
    if isinstance(space, str | Path):
        doc = read_toml(space)
        table = doc.get("search", {}).get("search_space", doc) if "search" in doc else doc
        return parse_space(table, model)
    if not isinstance(space, Mapping):
        raise ConfigError("space", "must be a dict or a TOML file's path", type(space).__name__)
    return parse_space(space, model, key="space")


def user_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Metric]:
    """`{"name": fn}`, `{"name": (fn, "minimize")}` or `{"name": {"fn": fn, "direction": ...,
    "unit": ...}}` as metrics of this search."""
    found: dict[str, Metric] = {}
    for name, value in (metrics or {}).items():
        if name in METRICS:
            raise ConfigError(f"metrics.{name}", "is a built-in or registered metric's name")
        if isinstance(value, Mapping):
            options = {k: v for k, v in value.items() if k != "fn"}
            found[name] = user_metric(name, value.get("fn"), **options)  # type: ignore[arg-type]
        elif isinstance(value, tuple):
            found[name] = user_metric(name, value[0], direction=value[1])
        else:
            found[name] = user_metric(name, value)
    return found
