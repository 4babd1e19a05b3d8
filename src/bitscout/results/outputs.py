"""What a search (or a re-ranking) leaves in its directory: best.toml, pareto.csv, summary.json,
written from the ranked trials (see `ranking`)."""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from bitscout._core.files import write_text
from bitscout.quant.apply import fx_name
from bitscout.quant.catalog import DATAPATH, TENSORS
from bitscout.quant.layers import LayerQuant
from bitscout.quant.space import SearchSpace
from bitscout.results.schema import SCHEMA_VERSION, choice_value

if TYPE_CHECKING:
    import pandas as pd  # 0.3 s: a type only; the frames come from the caller


def layer_table(quant: LayerQuant) -> dict[str, Any]:
    """One layer's `config` table with every field of its format explicit (defaults and
    "NA" resolved); layer-wide fields once."""
    tensors = {t: getattr(quant, t) for t in (*TENSORS, *DATAPATH)}
    first = next(f for f in tensors.values() if f is not None)
    layer_wide = {f.suffix for f in first.FIELDS if f.layer}
    cfg: dict[str, Any] = {"name": first.name}
    for tensor, fmt in tensors.items():
        if fmt is not None:
            values = fmt.values()
            cfg.update({f"{tensor}_{k}": v for k, v in values.items() if k not in layer_wide})
            cfg.update({k: v for k, v in values.items() if k in layer_wide})
    return cfg


def plan_table(space: SearchSpace, config: Mapping[str, Any]) -> dict:
    """`[passes.quantize]` by name, every field explicit, for `bitscout quantize --quant`."""
    table: dict[str, Any] = {"by": "name", "default": {"config": {"name": "NA"}}}
    for path, quant in space.resolved(config).items():
        if quant is not None and any(getattr(quant, t) is not None for t in TENSOR_NAMES):
            table[fx_name(path)] = {"config": layer_table(quant)}
    return table


TENSOR_NAMES = TENSORS


def row_config(row: Mapping[str, Any], dims: Sequence[str]) -> dict[str, Any]:
    """A trials.csv row's config: dimension -> choice, for the dimensions it sets (a field
    that its format does not take is empty there)."""
    values = {d: choice_value(row[d]) for d in dims}
    return {d: v for d, v in values.items() if v is not None}


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
    path: Path, front: "pd.DataFrame", dims: Sequence[str], metric_names: Sequence[str]
) -> None:
    """The Pareto set's distinct configs, with how many trials proposed each."""
    columns = ["number", "proposals", *dims, *[m for m in metric_names if m in front]]
    table = front[columns].copy()
    table.insert(0, "schema_version", SCHEMA_VERSION)
    write_text(path, table.to_csv(index=False, lineterminator="\n"))


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    write_text(path, json.dumps({"schema_version": SCHEMA_VERSION, **summary}, indent=2) + "\n")
