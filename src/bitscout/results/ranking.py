"""Ranking a search's trials, the one way every output does it (console, report.md, best.toml,
pareto.csv, summary.json, the Python result, compare).

Trials come as trials.csv's rows (a DataFrame), whether read back from a run directory or
made from the study in memory. Winners are distinct configs: a config proposed several times
(TPE and NSGA-II repeat themselves) appears once, with the number of trials that proposed it.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bitscout.results.schema import choice_value
from bitscout.study import adapter
from bitscout.study.objective import Objective, pareto_front

EVALUATED = ("complete", "infeasible")


def objective_columns(objective: Objective) -> list[str]:
    return ["objective"] if objective.single else [f"objective_{m}" for m in objective.names]


def rescore(df: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """The evaluated rows with every derived column recomputed under `objective`: the scaled
    metrics, the objective value(s), feasibility, state and the reason of the infeasible."""
    out = df[df["state"].isin(EVALUATED)].copy().reset_index(drop=True)
    rows = out.to_dict("records")
    for name, values in {f"scaled_{m.name}": [m.scale * r[m.name] for r in rows]
                         for m in objective.metrics}.items():  # fmt: skip
        out[name] = values
    values = [objective.values(r) for r in rows]
    for i, name in enumerate(objective_columns(objective)):
        out[name] = [v[i] for v in values]
    reasons = [objective.reason(r) for r in rows]
    out["feasible"] = [not r for r in reasons]
    out["state"] = ["complete" if not r else "infeasible" for r in reasons]
    out["reason"] = reasons
    return out


def config_keys(df: pd.DataFrame, dims: Sequence[str]) -> list[tuple]:
    """Each row's config as a hashable key (its dimension values; None where a field does not
    apply, since NaN never equals itself)."""
    if not dims:
        return [()] * len(df)
    return [tuple(choice_value(v) for v in row) for row in df[list(dims)].itertuples(index=False)]


def distinct(df: pd.DataFrame, dims: Sequence[str]) -> pd.DataFrame:
    """One row per distinct config (its first trial to finish), with `proposals`: how many
    trials proposed it."""
    keys = config_keys(df, dims)
    counts: dict[tuple, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    first = ~pd.Series(keys, index=df.index).duplicated()
    out = df[first.to_numpy()].copy()
    out["proposals"] = [counts[k] for k in config_keys(out, dims)]
    return out


def winners(
    df: pd.DataFrame, objective: Objective, dims: Sequence[str], top: int | None = 10
) -> pd.DataFrame:
    """From a `rescore`d frame: the `top` best distinct feasible configs (single objective;
    earlier trials first on ties), or the Pareto set of distinct configs sorted by the first
    metric (all of it)."""
    feasible = df[df["feasible"].astype(bool)] if len(df) else df
    if feasible.empty:
        return feasible.assign(proposals=pd.Series(dtype=int))
    pool = distinct(feasible, dims)
    cols = objective_columns(objective)
    if not objective.single:
        pool = pool.iloc[pareto_front(pool[cols].to_numpy().tolist(), objective.directions)]
        top = None
    up = objective.directions[0] == "maximize"
    ordered = pool.sort_values([cols[0], "number"], ascending=[not up, True], kind="stable")
    return ordered if top is None else ordered.head(top)


def best_so_far(values: np.ndarray, feasible: np.ndarray, direction: str) -> np.ndarray:
    """Running best of the feasible `values` in trial order; NaN before the first feasible."""
    sign = 1.0 if direction == "maximize" else -1.0
    signed = np.where(feasible, sign * np.asarray(values, dtype=float), -np.inf)
    running = np.maximum.accumulate(signed) if len(signed) else signed
    return np.where(np.isfinite(running), sign * running, np.nan)


def varying(df: pd.DataFrame, names: Sequence[str]) -> tuple[list[str], dict[str, float]]:
    """Metrics among `names` that vary across the rows, and the constant ones' values."""
    changing, constant = [], {}
    for name in names:
        if name not in df or df[name].isna().all():
            continue
        values = df[name].dropna().unique()
        if len(values) > 1:
            changing.append(name)
        else:
            constant[name] = float(values[0])
    return changing, constant


def entry(row: Mapping[str, Any], dims: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
    """A winner as summary.json and the Python result hold it."""
    return {
        "number": int(row["number"]),
        "proposals": int(row.get("proposals", 1)),
        # a field the trial's format does not take is left out, as in best.toml
        "config": {d: v for d in dims if (v := choice_value(row[d])) is not None},
        "metrics": {m: float(row[m]) for m in names if m in row and _known(row[m])},
    }


def _known(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


IMPORTANCE_TRIALS = 10_000  # a sample of a huge search tells as much


def param_importances(
    df: pd.DataFrame, dims: Sequence[str], objective: Objective
) -> dict[str, float]:
    """Optuna's importance of each dimension for the (first) objective, from a `rescore`d
    frame's distinct configs; empty when there is too little to tell."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    pool = distinct(df, dims)
    col = objective_columns(objective)[0]
    if len(pool) < 2 or not dims or pool[col].nunique() < 2:
        return {}  # nothing varies: nothing to attribute
    pool = pool.sample(min(len(pool), IMPORTANCE_TRIALS), random_state=0)
    choices = {d: tuple(sorted(pool[d].unique(), key=str)) for d in dims}
    study = optuna.create_study(direction=objective.directions[0])
    for row in pool.to_dict("records"):
        study.add_trial(optuna.trial.create_trial(
            params={d: row[d] for d in dims}, value=float(row[col]),
            distributions={d: CategoricalDistribution(choices[d]) for d in dims},
        ))  # fmt: skip
    return adapter.param_importances(study)
