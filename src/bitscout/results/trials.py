"""trials.csv: one row per trial of the study, in the order trials finished; the same rows as
a DataFrame for the Python result and the rankings."""

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from bitscout._core.files import atomic
from bitscout.objective import Objective
from bitscout.quant.space import SearchSpace
from bitscout.results.schema import SCHEMA_VERSION
from bitscout.study.chunks import Bitset, chunk_columns, is_chunk
from bitscout.study.store import adapter
from bitscout.study.store.base import finish_order, trial_state

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


def is_chunked(study: optuna.Study) -> bool:
    """Whether the study is a chunked brute force's (one trial per chunk of candidates)."""
    return bool(study.user_attrs.get("chunked"))


def chunk_tokens(study: optuna.Study) -> list[FrozenTrial]:
    """A chunked study's finished chunks, in the order they finished. Its other trials (a
    chunk interrupted or lost to another worker) hold no candidate and are not rows."""
    return [t for t in finish_order(study.get_trials(deepcopy=False)) if is_chunk(t)]


def chunk_frame(
    tokens: Sequence[FrozenTrial], space: SearchSpace, objective: Objective, names: Sequence[str]
) -> "pd.DataFrame":
    """trials.csv's rows of chunks, in the order given, built as columns (a million rows in
    seconds): `number` is the candidate's index in the space (there is no trial per
    candidate), and a cell that does not apply is NaN."""
    import pandas as pd

    from bitscout.results.ranking import derived  # pandas: only once there are results

    parts = [chunk_columns(t) for t in tokens]
    indices = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    n = len(indices)
    cols: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "number": indices, "cached": False}
    cols.update(space.columns(indices))
    for m in names:
        cols[m] = np.concatenate([p[1].get(m, np.full(len(p[0]), np.nan)) for p in parts] or [[]])
    cols.update(derived(objective, {m: cols[m] for m in names}, n))
    cols["duration_s"] = np.nan
    failures = {int(i): why for p in parts for i, why in p[2].items()}
    if failures:  # a failed candidate has no metrics: no derived values either
        failed = np.isin(indices, list(failures))
        cols["state"] = np.where(failed, "failed", cols["state"])
        cols["reason"] = [failures.get(i, r) for i, r in zip(indices.tolist(), cols["reason"],
                                                             strict=True)]  # fmt: skip
    frame = pd.DataFrame(cols)[csv_columns(space, objective, names)]
    for col in frame.select_dtypes(include=object).columns:  # as read back from the CSV
        frame[col] = frame[col].replace("", np.nan)
    return frame


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
        # read once: the attr is set when the study is opened, and each read of a journal
        # store syncs with its file (it would be I/O per candidate in `append`)
        self.chunked = is_chunked(study)
        self.appended: set[int] = set()  # chunk tokens whose rows are in the file
        self.written = Bitset(space.size)  # and their candidates

    def rewrite(self) -> int:
        """Write every trial of the study (atomically); return the row count. A chunked
        study is written chunk by chunk, so memory holds one chunk's rows at a time."""
        with atomic(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = self._writer(f)
            writer.writeheader()
            if self.chunked:
                tokens = chunk_tokens(self.study)
                self.appended = {t.number for t in tokens}
                return sum(self._write_chunk(f, t) for t in tokens)
            rows, _ = trial_rows(self.study, self.space, self.objective, self.names)
            writer.writerows(rows)
        return len(rows)

    def _write_chunk(self, f: TextIO, trial: FrozenTrial) -> int:
        frame = chunk_frame([trial], self.space, self.objective, self.names)
        self.written.add_many(frame["number"].to_numpy())
        frame.to_csv(f, header=False, index=False, lineterminator="\n")
        return len(frame)

    def finish(self) -> None:
        """Bring the file up to date at the end of a search: a chunked study's rows already
        in it stay (rewriting a million rows takes half a minute), the rest are added."""
        if self.chunked and self.path.exists():
            self._catch_up()
        else:
            self.rewrite()

    def _writer(self, f: TextIO) -> csv.DictWriter:
        return csv.DictWriter(
            f, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n"
        )

    def append(self, number: int) -> None:
        """Add the finished trial `number`; in a chunked study, `number` is a candidate's
        index, and every finished chunk not yet in the file is added (so each chunk once)."""
        if not self.chunked:
            trial = adapter.trial_by_number(self.study, number)
            with self.path.open("a", newline="") as f:
                self._writer(f).writerow(_row(trial, self.space, self.objective, self.names))
        elif number not in self.written:
            self._catch_up()

    def _catch_up(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        new = [t for t in trials if t.number not in self.appended and is_chunk(t)]
        with self.path.open("a", newline="") as f:
            for token in finish_order(new):
                self.appended.add(token.number)
                self._write_chunk(f, token)


def trials_frame(
    study: optuna.Study, space: SearchSpace, objective: Objective, metric_names: Sequence[str]
) -> "pd.DataFrame":
    """trials.csv as a DataFrame, straight from the study (empty cells are NaN)."""
    import pandas as pd  # 0.3 s: imported once a search needs its results

    if is_chunked(study):
        names = list(dict.fromkeys([*objective.names, *metric_names]))
        return chunk_frame(chunk_tokens(study), space, objective, names)
    rows, columns = trial_rows(study, space, objective, metric_names)
    frame = pd.DataFrame(rows, columns=columns)
    return frame.replace("", float("nan")).infer_objects()
