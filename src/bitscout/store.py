"""The study store: every trial of a search in one Optuna storage, and its CSV view."""

import contextlib
import csv
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from bitscout.errors import ConfigError
from bitscout.liveness import INTERRUPTED, worker_id
from bitscout.objective import Objective
from bitscout.space import Choice, SearchSpace

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


def open_storage(url: str) -> BaseStorage:
    """An RDB URL (`sqlite:///f.db`, `postgresql://...`) or else the path of an Optuna journal
    file, which is safe for several processes on one machine and needs no server."""
    if "://" not in url:
        path = Path(url)
        if path.is_dir():
            raise ConfigError("--storage", "must be an RDB URL or a journal file, not a directory",
                              url)  # fmt: skip
        return JournalStorage(JournalFileBackend(str(path)))
    for attempt in range(2):
        try:  # SQLAlchemy >= 2.1 reads postgresql:// with psycopg 3
            return RDBStorage(url)
        except Exception as err:
            # workers that start together on an empty database race to create Optuna's
            # tables; the losers see "already exists" and succeed on a later try
            if "already exists" not in str(err):
                raise
            time.sleep(0.5 * (attempt + 1))
    return RDBStorage(url)


def mask_password(url: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`."""
    return re.sub(r"(//[^:/@]+:)[^/]*@", r"\1***@", url)


def _password(url: str) -> str | None:
    found = re.search(r"//[^:/@]+:([^/]*)@", url)
    return found.group(1) if found else None


def _storage_error(url: str, err: Exception) -> ConfigError:
    text = f"{err.__class__.__name__}: {' '.join(str(err).split())}"[:300]
    secret = _password(url)
    if secret:
        text = text.replace(secret, "***")
    return ConfigError(
        "--storage",
        f"cannot open the storage {mask_password(url)} ({text}); allowed: a journal file path, "
        "sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/DB of a running server",
    )


def open_study(
    url: str,
    name: str,
    objective: Objective,
    meta: Mapping[str, Any],
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Create or resume study `name`; refuse to resume one made for another search (and
    write nothing to the store then)."""
    try:
        storage = open_storage(url)
        if name not in {s.study_name for s in storage.get_all_studies()}:
            with contextlib.suppress(DuplicatedStudyError):  # another worker was first
                optuna.create_study(
                    storage=storage, study_name=name, directions=objective.directions
                )
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except ConfigError:
        raise
    except Exception as err:  # any driver error means a bad or unreachable store
        raise _storage_error(url, err) from err
    if [d.name.lower() for d in study.directions] != list(objective.directions):
        raise ConfigError(
            "--study",
            f"study {name!r} exists with objective directions "
            f"{[d.name.lower() for d in study.directions]}, this search has "
            f"{list(objective.directions)}; use another --out or --study",
        )
    old = study.user_attrs
    for k, v in meta.items():  # all checked before anything is written
        if old.get(k) not in (None, v):
            raise ConfigError(
                "--study",
                f"study {name!r} was made with {k} = {old[k]!r}, this "
                f"search has {v!r}; use another --out or --study",
            )
    for k, v in meta.items():
        if k not in old:
            study.set_user_attr(k, v)
    return study


def record(
    study: optuna.Study, space: SearchSpace, config: Mapping[str, Choice], result: Result
) -> int:
    """Add one finished evaluation as a complete (or failed) trial, in one write; return
    its trial number."""
    failed = result.failure is not None
    trial = optuna.trial.create_trial(
        params=dict(config),
        distributions=distributions(space),
        values=None if failed else result.values,
        user_attrs={"worker": worker_id(), **result.attrs()},
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


def ended_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that ran to an end: complete, or failed by their own evaluation (not the
    interrupted ones, which are evaluated again)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        if "metrics" in t.user_attrs or t.user_attrs.get("failure") == "error"
    ]


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
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")  # shared directories
        trials = finish_order(self.study.get_trials(deepcopy=False))
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(_row(t, self.space, self.objective, self.names) for t in trials)
        tmp.replace(self.path)
        return len(trials)

    def append(self, number: int) -> None:
        """Add the finished trial `number`."""
        storage = self.study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        row = _row(storage.get_trial(trial_id), self.space, self.objective, self.names)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)

