"""What a search leaves in its directory: best.toml, pareto.csv, summary.json."""

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w
from optuna.trial import FrozenTrial
from torch import nn

from bitscout.files import atomic, write_text
from bitscout.quant.apply import fx_name
from bitscout.quant.formats import Integer
from bitscout.quant.space import SearchSpace
from bitscout.study.objective import Objective, pareto_front

SCHEMA_VERSION = 1


def feasible(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.user_attrs.get("feasible", True)]


def best_trials(trials: Sequence[FrozenTrial], objective: Objective) -> list[FrozenTrial]:
    """The winners among feasible trials, best first: for one objective the single best
    (earliest on ties); otherwise the Pareto set sorted by the first metric."""
    pool = feasible(trials)
    if not pool:
        return []
    if objective.single:
        sign = 1.0 if objective.direction == "maximize" else -1.0
        return [max(pool, key=lambda t: (sign * t.values[0], -t.number))]
    front = [pool[i] for i in pareto_front([t.values for t in pool], objective.directions)]
    sign = 1.0 if objective.directions[0] == "maximize" else -1.0
    return sorted(front, key=lambda t: (-sign * t.values[0], t.number))


def ranked(trials: Sequence[FrozenTrial], objective: Objective, top: int) -> list[FrozenTrial]:
    """For display: the `top` best feasible trials (single objective) or the Pareto set."""
    if not objective.single:
        return best_trials(trials, objective)
    sign = 1.0 if objective.direction == "maximize" else -1.0
    return sorted(feasible(trials), key=lambda t: (-sign * t.values[0], t.number))[:top]


def _format_fields(prefix: str, fmt: Integer | None) -> dict[str, Any]:
    if fmt is None:
        return {}
    fields: dict[str, Any] = {f"{prefix}_width": fmt.width, f"{prefix}_frac_width": fmt.frac_width}
    return fields


def plan_table(model: nn.Module, space: SearchSpace, config: Mapping[str, Any]) -> dict:
    """`[passes.quantize]` by name, every frac width explicit, for `bitscout quantize --quant`."""
    table: dict[str, Any] = {"by": "name", "default": {"config": {"name": "NA"}}}
    for path, quant in space.resolved(model, config).items():
        if quant is None:
            continue
        cfg: dict[str, Any] = {"name": "integer"}
        for tensor in ("data_in", "weight", "bias"):
            cfg.update(_format_fields(tensor, getattr(quant, tensor)))
        fmt = quant.weight or quant.data_in or quant.bias
        if fmt is not None and (fmt.rounding, fmt.overflow) != ("half_even", "saturate"):
            cfg.update(rounding=fmt.rounding, overflow=fmt.overflow)
        table[fx_name(path)] = {"config": cfg}
    return table


def write_best_toml(path: Path, model: nn.Module, space: SearchSpace, trial: FrozenTrial) -> None:
    doc = {
        "schema_version": SCHEMA_VERSION,
        "trial": trial.number,
        "passes": {"quantize": plan_table(model, space, trial.params)},
    }
    write_text(path, tomli_w.dumps(doc))


def write_pareto_csv(
    path: Path, front: Sequence[FrozenTrial], space: SearchSpace, metric_names: Sequence[str]
) -> None:
    columns = ["schema_version", "number", *[d.name for d in space.dimensions], *metric_names]
    with atomic(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for t in front:
            metrics = t.user_attrs["metrics"]
            writer.writerow(
                [
                    SCHEMA_VERSION,
                    t.number,
                    *[t.params.get(d.name, "") for d in space.dimensions],
                    *[metrics.get(m, "") for m in metric_names],
                ]
            )


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    write_text(path, json.dumps({"schema_version": SCHEMA_VERSION, **summary}, indent=2) + "\n")


def best_entry(trial: FrozenTrial | None) -> dict[str, Any] | None:
    if trial is None:
        return None
    return {
        "number": trial.number,
        "config": dict(trial.params),
        "metrics": trial.user_attrs["metrics"],
        "objective": list(trial.values),
    }


def objective_spec(objective: Objective) -> dict[str, Any]:
    """The objective as summary.json records it, so a report can re-read and re-rank."""
    return {
        "single": objective.single,
        "direction": objective.direction,
        "metrics": [
            {"name": m.name, "scale": m.scale, "direction": m.direction} for m in objective.metrics
        ],
        "constraints": [str(c) for c in objective.constraints],
    }
