"""Report tables, computed from a run's trials.csv and summary.json (drawing is in plots.py)."""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import get_metric
from bitscout.study.objective import MetricSpec, Objective, constraint_text, pareto_front

Z95 = 1.959963984540054  # standard normal quantile for a two-sided 95% interval


@dataclass(frozen=True)
class Run:
    """A finished search as its directory holds it."""

    trials: pd.DataFrame  # the evaluated rows of trials.csv (state complete or infeasible)
    summary: dict[str, Any]
    objective: Objective
    dimensions: list[str]


def objective_from_spec(spec: dict[str, Any]) -> Objective:
    metrics = tuple(MetricSpec(m["name"], m["scale"], m["direction"]) for m in spec["metrics"])
    constraints = tuple(constraint_text(text, "summary.json") for text in spec["constraints"])
    return Objective(metrics, spec["single"], spec["direction"], constraints)


def load_run(out: Path) -> Run:
    """Read `out/summary.json` and `out/trials.csv`; a missing file is a ConfigError."""
    try:
        summary = json.loads((out / "summary.json").read_text())
        trials = pd.read_csv(out / "trials.csv")
    except (OSError, ValueError) as err:
        raise ConfigError(str(out), f"not a finished search directory ({err})") from err
    evaluated = trials[trials["state"].isin(["complete", "infeasible"])].reset_index(drop=True)
    return Run(evaluated, summary, objective_from_spec(summary["objective"]), summary["dimensions"])


def parse_objective_arg(text: str) -> list[MetricSpec]:
    """`accuracy=2.0,average_bitwidth=-0.1` -> scales (directions: each metric's default)."""
    specs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, scale = part.partition("=")
        try:
            value = float(scale) if sep else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(
                "--objective", "must look like accuracy=2.0,average_bitwidth=-0.1", text
            )
        specs.append(
            MetricSpec(name.strip(), value, get_metric(name.strip(), "--objective").direction)
        )
    if not specs:
        raise ConfigError("--objective", "needs at least one metric=scale", text)
    return specs


def rerank_objective(run: Run, objective: str | None, constraints: list[str]) -> Objective:
    """The run's objective with `--objective` scales and/or `--constraint`s replacing its own."""
    base = run.objective
    metrics = tuple(parse_objective_arg(objective)) if objective else base.metrics
    cons = tuple(constraint_text(c, "--constraint") for c in constraints) or base.constraints
    single = True if objective else base.single
    new = Objective(metrics, single, "maximize" if objective else base.direction, cons)
    missing = [m for m in [*new.names, *(c.metric for c in cons)] if m not in run.trials]
    if missing:
        raise ConfigError("--objective", "metric not recorded in trials.csv", missing[0])
    return new


def rescore(trials: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """A copy with `objective` column(s) and `feasible` recomputed from the stored metrics."""
    df = trials.copy()
    rows = df.to_dict("records")
    values = [objective.values(r) for r in rows]
    for i, name in enumerate(objective_columns(objective)):
        df[name] = [v[i] for v in values]
    df["feasible"] = [objective.feasible(r) for r in rows]
    return df


def objective_columns(objective: Objective) -> list[str]:
    return ["objective"] if objective.single else [f"objective_{m}" for m in objective.names]


def best_so_far(values: np.ndarray, feasible: np.ndarray, direction: str) -> np.ndarray:
    """Running best of the feasible `values` in trial order; NaN before the first feasible."""
    sign = 1.0 if direction == "maximize" else -1.0
    signed = np.where(feasible, sign * np.asarray(values, dtype=float), -np.inf)
    running = np.maximum.accumulate(signed)
    return np.where(np.isfinite(running), sign * running, np.nan)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 or 1 a bound is exactly 0 or 1; floating point would miss it by an ulp.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def winners(df: pd.DataFrame, objective: Objective, top: int = 10) -> pd.DataFrame:
    """Top `top` feasible rows (single objective; earliest first on ties) or the Pareto set
    sorted by the first metric, from a `rescore`d frame."""
    pool = df[df["feasible"]]
    cols = objective_columns(objective)
    first_up = objective.directions[0] == "maximize"
    if not objective.single:
        front = pareto_front(pool[cols].to_numpy().tolist(), objective.directions)
        pool = pool.iloc[front]
        top = len(pool)
    ordered = pool.sort_values([cols[0], "number"], ascending=[not first_up, True])
    return ordered.head(top)
