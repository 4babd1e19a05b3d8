"""What a search (or a re-ranking) leaves in its directory: best.toml, pareto.csv, summary.json,
written from the ranked trials (see `ranking`)."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from bitscout.files import write_text
from bitscout.quant.apply import fx_name
from bitscout.quant.formats import Integer
from bitscout.quant.space import SearchSpace
from bitscout.results.schema import SCHEMA_VERSION, choice_value


def _format_fields(prefix: str, fmt: Integer | None) -> dict[str, Any]:
    if fmt is None:
        return {}
    return {f"{prefix}_width": fmt.width, f"{prefix}_frac_width": fmt.frac_width}


def plan_table(space: SearchSpace, config: Mapping[str, Any]) -> dict:
    """`[passes.quantize]` by name, every frac width explicit, for `bitscout quantize --quant`."""
    table: dict[str, Any] = {"by": "name", "default": {"config": {"name": "NA"}}}
    for path, quant in space.resolved(config).items():
        if quant is None:
            continue
        cfg: dict[str, Any] = {"name": "integer"}
        for tensor in ("data_in", "weight", "bias", "accum", "result"):
            cfg.update(_format_fields(tensor, getattr(quant, tensor)))
        fmt = quant.weight or quant.data_in or quant.bias or quant.accum or quant.result
        if fmt is not None and (fmt.rounding, fmt.overflow) != ("half_even", "saturate"):
            cfg.update(rounding=fmt.rounding, overflow=fmt.overflow)
        table[fx_name(path)] = {"config": cfg}
    return table


def row_config(row: Mapping[str, Any], dims: Sequence[str]) -> dict[str, Any]:
    """A trials.csv row's config: dimension -> choice."""
    return {d: choice_value(row[d]) for d in dims}


def write_best_toml(path: Path, space: SearchSpace, row: Mapping[str, Any]) -> None:
    """The winner as a `[passes.quantize]` table that `bitscout quantize --quant` applies."""
    config = row_config(row, [d.name for d in space.dimensions])
    doc = {
        "schema_version": SCHEMA_VERSION,
        "trial": int(row["number"]),
        "passes": {"quantize": plan_table(space, config)},
    }
    write_text(path, tomli_w.dumps(doc))


def write_pareto_csv(
    path: Path, front: pd.DataFrame, dims: Sequence[str], metric_names: Sequence[str]
) -> None:
    """The Pareto set's distinct configs, with how many trials proposed each."""
    columns = ["number", "proposals", *dims, *[m for m in metric_names if m in front]]
    table = front[columns].copy()
    table.insert(0, "schema_version", SCHEMA_VERSION)
    write_text(path, table.to_csv(index=False, lineterminator="\n"))


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    write_text(path, json.dumps({"schema_version": SCHEMA_VERSION, **summary}, indent=2) + "\n")
