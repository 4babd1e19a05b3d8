"""trials.csv: one row per trial of the study, in the order trials finished; the same rows as
a DataFrame for the Python result and the rankings."""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import optuna
from optuna.trial import FrozenTrial

from bitscout.files import atomic
from bitscout.quant.space import SearchSpace
from bitscout.results.schema import SCHEMA_VERSION
from bitscout.study import adapter
from bitscout.study.objective import Objective
from bitscout.study.store import finish_order, trial_state

if TYPE_CHECKING:
    import pandas as pd


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
        trial = adapter.trial_by_number(self.study, number)
        row = _row(trial, self.space, self.objective, self.names)
        with self.path.open("a", newline="") as f:
            self._writer(f).writerow(row)


def trials_frame(
    study: optuna.Study, space: SearchSpace, objective: Objective, metric_names: Sequence[str]
) -> "pd.DataFrame":
    """trials.csv as a DataFrame, straight from the study (empty cells are NaN)."""
    import pandas as pd  # 0.3 s: imported once a search needs its results

    rows, columns = trial_rows(study, space, objective, metric_names)
    frame = pd.DataFrame(rows, columns=columns)
    return frame.replace("", float("nan")).infer_objects()
