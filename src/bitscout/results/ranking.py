"""Ranking a search's trials, the one way every output does it (console, report.md, best.toml,
pareto.csv, summary.json, the Python result, compare).

Trials come as trials.csv's rows (a DataFrame), whether read back from a run directory or
made from the study in memory. Winners are distinct configs: a config proposed several times
(TPE and NSGA-II repeat themselves) appears once, with the number of trials that proposed it.
"""

import copy
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from bitscout.objective import Objective, pareto_front, sign
from bitscout.results.schema import choice_value
from bitscout.results.trials import quiet_optuna

EVALUATED = ("complete", "infeasible")


def objective_columns(objective: Objective) -> list[str]:
    return ["objective"] if objective.single else [f"objective_{m}" for m in objective.names]


def rescore(df: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """The evaluated rows with every derived column recomputed under `objective`: the scaled
    metrics, the objective value(s), feasibility, state and the reason of the infeasible."""
    out = df[df["state"].isin(EVALUATED)].copy().reset_index(drop=True)
    columns = {m: out[m].to_numpy(dtype=float) for m in objective.names}
    columns.update({c.metric: out[c.metric].to_numpy(dtype=float) for c in objective.constraints})
    for name, values in derived(objective, columns, len(out)).items():
        out[name] = values
    return out


def derived(objective: Objective, metrics: Mapping[str, np.ndarray], n: int) -> dict[str, Any]:
    """trials.csv's columns computed from the metric columns, row by row exactly as
    `Objective` computes them (the objective's fsum included): scaled_*, objective(s),
    feasible, state and reason. Columnar, so a million rows need no per-row dicts."""
    out: dict[str, Any] = {f"scaled_{m.name}": m.scale * metrics[m.name] for m in objective.metrics}
    cols = objective_columns(objective)
    if objective.single:
        scaled = [out[f"scaled_{m.name}"] for m in objective.metrics]
        out[cols[0]] = np.array([math.fsum(v) for v in zip(*scaled, strict=True)], dtype=float)
    else:
        out.update({c: metrics[m.name].astype(float) for c, m in zip(cols, objective.metrics,
                                                                     strict=True)})  # fmt: skip
    reasons = [""] * n
    if objective.constraints:
        names = [c.metric for c in objective.constraints]
        rows = zip(*(metrics[m] for m in names), strict=True)
        reasons = [objective.reason(dict(zip(names, r, strict=True))) for r in rows]
    out["feasible"] = [not r for r in reasons]
    out["state"] = ["complete" if not r else "infeasible" for r in reasons]
    out["reason"] = reasons
    return out


def distinct(df: pd.DataFrame, dims: Sequence[str]) -> pd.DataFrame:
    """One row per distinct config (its first trial to finish), with `proposals`: how many
    trials proposed it. Grouped by pandas, so a million rows take a second (a field that
    does not apply is NaN, which groups with NaN)."""
    if not dims or df.empty:
        out = df.head(1 if len(df) else 0).copy()
        out["proposals"] = [len(df)] * len(out)
        return out
    group = df.groupby(list(dims), dropna=False, sort=False).ngroup().to_numpy()
    first = ~pd.Series(group).duplicated().to_numpy()
    out = df[first].copy()
    out["proposals"] = np.bincount(group)[group[first]]
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
    up = sign(objective.directions[0]) > 0
    ordered = pool.sort_values([cols[0], "number"], ascending=[not up, True], kind="stable")
    return ordered if top is None else ordered.head(top)


def best_so_far(values: np.ndarray, feasible: np.ndarray, direction: str) -> np.ndarray:
    """Running best of the feasible `values` in trial order; NaN before the first feasible."""
    s = sign(direction)
    signed = np.where(feasible, s * np.asarray(values, dtype=float), -np.inf)
    running = np.maximum.accumulate(signed) if len(signed) else signed
    return np.where(np.isfinite(running), s * running, np.nan)


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


IMPORTANCE_TRIALS = 3_000  # a sample of a huge search tells as much, in a second


def param_importances(
    df: pd.DataFrame, dims: Sequence[str], objective: Objective
) -> dict[str, float]:
    """Optuna's importance of each dimension for the (first) objective, from a `rescore`d
    frame's distinct configs (PED-ANOVA, Optuna's default evaluator; shares of 1, largest
    first); empty when there is too little to tell."""
    from optuna.importance import PedAnovaImportanceEvaluator  # loads scikit-learn: 1.3 s

    pool = distinct(df, dims)
    col = objective_columns(objective)[0]
    if len(pool) < 2 or not dims or pool[col].nunique() < 2:
        return {}  # nothing varies: nothing to attribute
    pool = pool.sample(min(len(pool), IMPORTANCE_TRIALS), random_state=0)
    study = _importance_study(pool, dims, col, sign(objective.directions[0]) > 0)
    found = PedAnovaImportanceEvaluator().evaluate(study)
    total = sum(found.values())
    if total <= 0:
        return {}
    ranked = sorted(found.items(), key=lambda kv: kv[1], reverse=True)
    return {name: float(value) / total for name, value in ranked}


def _importance_study(pool: pd.DataFrame, dims: Sequence[str], col: str, up: bool) -> Any:
    """An in-memory study holding `pool`'s configs as complete trials valued by `col`."""
    import optuna
    from optuna.distributions import BaseDistribution, CategoricalDistribution
    from optuna.trial import FrozenTrial, TrialState

    class Shared(FrozenTrial):
        """The in-memory storage deep-copies each trial it is given (0.1-0.3 s for 1,000
        trials of 12 dimensions); these are never changed, so a shallow copy is as safe."""

        def __deepcopy__(self, memo: dict[int, Any]) -> "Shared":
            return copy.copy(self)

    choices = {d: tuple(sorted(map(_plain, pool[d].unique()), key=str)) for d in dims}
    distributions: dict[str, BaseDistribution] = {
        d: CategoricalDistribution(choices[d]) for d in dims
    }  # one dict shared by every trial
    now = datetime.now()
    with quiet_optuna():  # a study in memory: no "created" line
        study = optuna.create_study(direction="maximize" if up else "minimize")
    study.add_trials([
        Shared(number=0, trial_id=0, state=TrialState.COMPLETE, value=float(row[col]),
               datetime_start=now, datetime_complete=now,
               params={d: _plain(row[d]) for d in dims}, distributions=distributions,
               user_attrs={}, system_attrs={}, intermediate_values={})
        for row in pool.to_dict("records")
    ])  # fmt: skip
    return study


def _plain(value: Any) -> Any:
    """A Python scalar for Optuna, which warns about NumPy ones (int32 config columns)."""
    return value.item() if hasattr(value, "item") else value
