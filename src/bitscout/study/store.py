"""The study store: every trial of a search in one Optuna storage, and its CSV view."""

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from bitscout.files import atomic
from bitscout.quant.space import Choice, SearchSpace
from bitscout.study.liveness import INTERRUPTED, worker_id
from bitscout.study.objective import Objective

SCHEMA_VERSION = 2  # 2: trials.csv gained `reason`
CONSTRAINTS_KEY = "constraints"  # Optuna's system-attr prefix, as `Trial.set_constraint` uses
# Optuna logs each caught candidate failure with a traceback; bitscout records the reason.
optuna.logging.set_verbosity(optuna.logging.ERROR)


@dataclass(frozen=True)
class Result:
    """One evaluated trial as the store keeps it."""

    metrics: dict[str, float]
    values: list[float]
    violations: dict[str, float]
    feasible: bool
    cached: bool
    duration_s: float
    failure: str | None = None  # why the candidate failed (it raised, or a metric is not finite)

    def attrs(self) -> dict[str, Any]:
        if self.failure is not None:
            return {"failure": "error", "reason": self.failure, "duration_s": self.duration_s}
        return {
            "metrics": self.metrics,
            "feasible": self.feasible,
            "cached": self.cached,
            "duration_s": self.duration_s,
        }


def distributions(space: SearchSpace) -> dict[str, CategoricalDistribution]:
    return {d.name: CategoricalDistribution(d.choices) for d in space.dimensions}


def record(
    study: optuna.Study,
    space: SearchSpace,
    config: Mapping[str, Choice],
    result: Result,
    attrs: Mapping[str, Any] | None = None,
) -> int:
    """Add one finished evaluation as a complete (or failed) trial, in one write, with `attrs`
    besides the result's; return its trial number."""
    failed = result.failure is not None
    trial = optuna.trial.create_trial(
        params=dict(config),
        distributions=distributions(space),
        values=None if failed else result.values,
        user_attrs={"worker": worker_id(), **(attrs or {}), **result.attrs()},
        constraints=None if failed else result.violations or None,
        state=TrialState.FAIL if failed else TrialState.COMPLETE,
    )
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=trial)
    return study._storage.get_trial_number_from_id(trial_id)


def start_trial(
    study: optuna.Study, space: SearchSpace, config: Mapping[str, Choice], attrs: Mapping
) -> int:
    """A RUNNING trial for `config`, stamped with this worker; returns its trial id."""
    trial = optuna.trial.create_trial(
        params=dict(config),
        distributions=distributions(space),
        user_attrs={"worker": worker_id(), **attrs},
        state=TrialState.RUNNING,
    )
    return study._storage.create_new_trial(study._study_id, template_trial=trial)


def finish_trial(study: optuna.Study, trial_id: int, result: Result) -> None:
    """Complete (or fail) a RUNNING trial with `result`."""
    storage = study._storage
    for key, value in result.attrs().items():
        storage.set_trial_user_attr(trial_id, key, value)
    if result.failure is not None:
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        return
    for name, violation in result.violations.items():
        storage.set_trial_system_attr(trial_id, f"{CONSTRAINTS_KEY}:{name}", violation)
    storage.set_trial_state_values(trial_id, TrialState.COMPLETE, result.values)


def set_trial_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    study._storage.set_trial_user_attr(trial_id, key, value)


def trial_number(study: optuna.Study, trial_id: int) -> int:
    return study._storage.get_trial_number_from_id(trial_id)


def abandon_trial(study: optuna.Study, trial_id: int, state: TrialState, reason: str) -> None:
    """End a RUNNING trial that will not be evaluated here: FAIL (interrupted) or PRUNED."""
    storage = study._storage
    failure = INTERRUPTED if state == TrialState.FAIL else "pruned"
    storage.set_trial_user_attr(trial_id, "failure", failure)
    storage.set_trial_user_attr(trial_id, "reason", reason)
    storage.set_trial_state_values(trial_id, state)


def finish_order(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Trials in the order they finished (unfinished last, by number): a brute-force worker
    numbers its claim token first but finishes it last."""
    far = datetime.max.replace(tzinfo=UTC)

    def when(t: FrozenTrial) -> tuple[datetime, int]:
        done = t.datetime_complete
        if done is None:
            return far, t.number
        return (done if done.tzinfo else done.astimezone(UTC)), t.number

    return sorted(trials, key=when)


def done_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials that carry metrics, in the order they finished."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return finish_order([t for t in complete if "metrics" in t.user_attrs])


def has_ended(trial: FrozenTrial) -> bool:
    """Whether a trial ran to an end: complete with its metrics, or failed by its own
    evaluation. An interrupted trial has not, even when its metrics were written before the
    interruption (it is evaluated again)."""
    if trial.state == TrialState.COMPLETE:
        return "metrics" in trial.user_attrs
    return trial.state == TrialState.FAIL and trial.user_attrs.get("failure") == "error"


def ended_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that ran to an end (see `has_ended`): what n_trials counts."""
    states = (TrialState.COMPLETE, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=states) if has_ended(t)]


def trial_state(trial: FrozenTrial) -> str:
    """complete, infeasible, failed, running, waiting or pruned (lost a claim to a worker)."""
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
    row["reason"] = trial.user_attrs.get("reason", "")
    return row


def csv_columns(space: SearchSpace, objective: Objective, names: Sequence[str]) -> list[str]:
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
    return columns + ["duration_s", "reason"]


def trial_rows(
    study: optuna.Study, space: SearchSpace, objective: Objective, metric_names: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """trials.csv's rows (every trial, in the order they finished) and its columns."""
    names = list(dict.fromkeys([*objective.names, *metric_names]))
    trials = finish_order(study.get_trials(deepcopy=False))
    return [_row(t, space, objective, names) for t in trials], csv_columns(space, objective, names)


class TrialsCsv:
    """`trials.csv`: rewritten whole from the store (at the start and the end of a search) and
    appended to as this worker's trials finish, so it is current while a search runs."""

    def __init__(
        self,
        path: Path,
        study: optuna.Study,
        space: SearchSpace,
        objective: Objective,
        metric_names: Sequence[str],
    ) -> None:
        self.path, self.study, self.space, self.objective = path, study, space, objective
        self.names = list(dict.fromkeys([*objective.names, *metric_names]))
        self.columns = csv_columns(space, objective, self.names)

    def rewrite(self) -> int:
        """Write every trial of the study (atomically); return the row count."""
        rows, _ = trial_rows(self.study, self.space, self.objective, self.names)
        with atomic(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = self._writer(f)
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)

    def _writer(self, f: TextIO) -> csv.DictWriter:
        return csv.DictWriter(
            f, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n"
        )

    def append(self, number: int) -> None:
        """Add the finished trial `number`."""
        storage = self.study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        row = _row(storage.get_trial(trial_id), self.space, self.objective, self.names)
        with self.path.open("a", newline="") as f:
            self._writer(f).writerow(row)
