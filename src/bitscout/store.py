"""The study store: every trial of a search in one Optuna storage, and its CSV view."""

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from bitscout.errors import ConfigError
from bitscout.objective import Objective
from bitscout.space import Choice, SearchSpace

SCHEMA_VERSION = 1
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class Result:
    """One evaluated trial as the store keeps it."""

    metrics: dict[str, float]
    values: list[float]
    violations: dict[str, float]
    feasible: bool
    cached: bool
    duration_s: float

    def attrs(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "feasible": self.feasible,
            "cached": self.cached,
            "duration_s": self.duration_s,
        }


def distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    return {d.name: CategoricalDistribution(d.choices) for d in space.dimensions}


def open_study(
    url: str,
    name: str,
    objective: Objective,
    meta: Mapping[str, Any],
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Create or resume study `name`; refuse to resume one made for another search."""
    try:
        study = optuna.create_study(
            storage=url,
            study_name=name,
            load_if_exists=True,
            directions=objective.directions,
            sampler=sampler,
        )
    except ValueError as err:
        raise ConfigError(
            "--storage",
            f"study {name!r} exists with other objective "
            f"directions ({err}); use another --out or --study",
        ) from err
    except Exception as err:
        raise ConfigError(
            "--storage",
            f"cannot open the storage ({err.__class__.__name__}: {str(err).splitlines()[0]})",
        ) from err
    for k, v in meta.items():
        old = study.user_attrs.get(k)
        if old is None:
            study.set_user_attr(k, v)
        elif old != v:
            raise ConfigError(
                "--study",
                f"study {name!r} was made with {k} = {old!r}, this "
                f"search has {v!r}; use another --out or --study",
            )
    return study


def record(
    study: optuna.Study, space: SearchSpace, config: Mapping[str, Choice], result: Result
) -> FrozenTrial:
    """Add one finished evaluation as a complete trial (used by strategies that pick
    candidates themselves, such as our brute force)."""
    trial = optuna.trial.create_trial(
        params=dict(config),
        distributions=distributions(space),
        values=result.values,
        user_attrs=result.attrs(),
        constraints=result.violations or None,
        state=TrialState.COMPLETE,
    )
    study.add_trial(trial)
    return trial


def done_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials that carry metrics, in trial order."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "metrics" in t.user_attrs
    ]


def trial_state(trial: FrozenTrial) -> str:
    if trial.state != TrialState.COMPLETE:
        return "failed" if trial.state == TrialState.FAIL else trial.state.name.lower()
    return "complete" if trial.user_attrs.get("feasible", True) else "infeasible"


def _row(
    trial: FrozenTrial, space: SearchSpace, objective: Objective, metric_names: Sequence[str]
) -> dict[str, Any]:
    metrics = trial.user_attrs.get("metrics", {})
    row: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "number": trial.number,
        "state": trial_state(trial),
        "cached": bool(trial.user_attrs.get("cached", False)),
    }
    row.update({d.name: trial.params.get(d.name, "") for d in space.dimensions})
    row.update({m: metrics.get(m, "") for m in metric_names})
    if metrics and all(m in metrics for m in objective.names):
        row.update({f"scaled_{k}": v for k, v in objective.scaled(metrics).items()})
    values = trial.values or []
    for i, _ in enumerate(objective.directions):
        col = "objective" if objective.single else f"objective_{objective.names[i]}"
        row[col] = values[i] if i < len(values) else ""
    row["duration_s"] = trial.user_attrs.get("duration_s", "")
    return row


def write_trials_csv(
    path: Path,
    study: optuna.Study,
    space: SearchSpace,
    objective: Objective,
    metric_names: Sequence[str],
) -> int:
    """Write every trial of `study` to `path` (atomically); return the row count."""
    names = list(dict.fromkeys([*objective.names, *metric_names]))
    columns = [
        "schema_version",
        "number",
        "state",
        "cached",
        *[d.name for d in space.dimensions],
        *names,
        *[f"scaled_{m}" for m in objective.names],
    ]
    columns += ["objective"] if objective.single else [f"objective_{m}" for m in objective.names]
    columns.append("duration_s")
    tmp = path.with_suffix(".csv.tmp")
    trials = study.get_trials(deepcopy=False)
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for t in trials:
            writer.writerow(_row(t, space, objective, names))
    tmp.replace(path)
    return len(trials)
