"""trials.csv: one row per trial of the study, in the order trials finished; the same rows as
a DataFrame for the Python result and the rankings.

Results sit below the search (`bitscout.study`) and never see Optuna's trials: they read a
`TrialSource`, which the study's store is, through plain data. `TRIAL_COLUMNS` is the frame a
source gives (one row per trial), `Chunk` one finished chunk of a chunked brute force."""

import contextlib
import csv
import math
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import numpy as np

from bitscout._core.files import atomic
from bitscout.objective import Objective
from bitscout.quant.space import SearchSpace
from bitscout.results.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    import pandas as pd

# A source's trials frame, in the order trials finished: `state` as trials.csv writes it
# (complete, infeasible, failed, running, waiting, pruned), `params` and `metrics` dicts
# ({} when none), `values` the objective values (None unless complete), `cached`, and
# `duration_s` and `reason` (missing: None or NaN, as pandas makes it), and `epochs`, those
# the candidate trained (0 without training; a pruned one's: the rung it reached).
TRIAL_COLUMNS = ("number", "state", "params", "metrics", "values", "cached", "duration_s",
                 "reason", "epochs")  # fmt: skip
UNSETTLED = ("running", "waiting")  # states whose row changes when the trial ends


@dataclass(frozen=True)
class Result:
    """One evaluated candidate, as a strategy scores it and the store records it."""

    metrics: dict[str, float]
    values: list[float]
    violations: dict[str, float]
    feasible: bool
    cached: bool
    duration_s: float
    failure: str | None = None  # why the candidate failed (it raised, or a metric is not finite)
    reason: str = ""  # why a complete candidate is infeasible: the constraints it breaks
    epochs: int | None = None  # epochs it trained (None: not trained)
    pruned: bool = False  # a fidelity ladder stopped it after `epochs`: metrics of that rung


@dataclass(frozen=True)
class Chunk:
    """A finished chunk of a chunked brute force: its candidates' indices in the space, one
    column per metric (NaN where a candidate failed) and the failures' reasons by index."""

    number: int  # the chunk's trial number
    indices: np.ndarray
    metrics: Mapping[str, np.ndarray]
    failures: Mapping[str, str]


class TrialSource(Protocol):
    """What the results read of a study (`bitscout.study.store.Store` is one)."""

    def is_chunked(self) -> bool:
        """Whether the study keeps one trial per chunk of candidates (a chunked brute force)."""
        ...

    def frame(self) -> "pd.DataFrame":
        """Every trial, in the order they finished, as `TRIAL_COLUMNS`."""
        ...

    def trial_row(self, number: int) -> Mapping[str, Any]:
        """Trial `number` as one row of `frame`."""
        ...

    def chunks(self, skip: Container[int] = ()) -> list[Chunk]:
        """The finished chunks whose number is not in `skip`, in the order they finished."""
        ...


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own log lines (a line per trial, a traceback per caught candidate failure,
    one per study created) silenced while the block runs, then the caller's level back:
    bitscout reports trials itself and records why a candidate failed. The lowest layer that
    makes Optuna studies (importances) holds it; the search runs inside it."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(before, optuna.logging.ERROR))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _cell(value: Any) -> Any:
    """A frame cell as trials.csv writes it: nothing for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def _row(
    trial: Mapping[str, Any],
    space: SearchSpace,
    objective: Objective,
    metric_names: Sequence[str],
) -> dict[str, Any]:
    metrics = trial["metrics"] or {}
    params = trial["params"] or {}
    row: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "number": int(trial["number"]),
        "state": trial["state"],
        "cached": bool(_cell(trial["cached"])),
    }
    row.update({d.name: params.get(d.name, "") for d in space.dimensions})
    row.update({m: metrics.get(m, "") for m in metric_names})
    if metrics and all(m in metrics for m in objective.names):
        row.update({f"scaled_{k}": v for k, v in objective.scaled(metrics).items()})
    values = _cell(trial["values"]) or []
    if _rankable(trial["state"], metrics, objective):  # under this objective: a resume's may differ
        values = objective.values(metrics)
        row["state"] = "infeasible" if objective.reason(metrics) else "complete"
        trial = {**trial, "reason": objective.reason(metrics)}
    for i, _ in enumerate(objective.directions):
        col = "objective" if objective.single else f"objective_{objective.names[i]}"
        row[col] = values[i] if i < len(values) else ""
    row["epochs"] = _cell(trial.get("epochs"))
    row["duration_s"] = _cell(trial["duration_s"])
    row["reason"] = _cell(trial["reason"])
    return row


def _rankable(state: str, metrics: Mapping[str, float], objective: Objective) -> bool:
    """Whether an evaluated trial's objective and feasibility can be recomputed from its
    metrics (they are, for every trial: a resumed study may rank by new ones)."""
    needed = [*objective.names, *(c.metric for c in objective.constraints)]
    return state in ("complete", "infeasible") and all(m in metrics for m in needed)


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
    return columns + ["epochs", "duration_s", "reason"]


def trial_rows(
    source: TrialSource, space: SearchSpace, objective: Objective, metric_names: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """trials.csv's rows (every trial, in the order they finished) and its columns."""
    names = list(dict.fromkeys([*objective.names, *metric_names]))
    trials = source.frame().to_dict("records")
    return [_row(t, space, objective, names) for t in trials], csv_columns(space, objective, names)


def chunk_frame(
    chunks: Sequence[Chunk], space: SearchSpace, objective: Objective, names: Sequence[str]
) -> "pd.DataFrame":
    """trials.csv's rows of chunks, in the order given, built as columns (a million rows in
    seconds): `number` is the candidate's index in the space (there is no trial per
    candidate), and a cell that does not apply is NaN."""
    import pandas as pd

    from bitscout.results.ranking import derived  # pandas: only once there are results

    indices = np.concatenate([c.indices for c in chunks]) if chunks else np.zeros(0, np.int64)
    n = len(indices)
    cols: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "number": indices, "cached": False}
    cols.update(space.columns(indices))
    for m in names:
        parts = [c.metrics.get(m, np.full(len(c.indices), np.nan)) for c in chunks]
        cols[m] = np.concatenate(parts) if parts else np.zeros(0)
    cols.update(derived(objective, {m: cols[m] for m in names}, n))
    cols["epochs"] = np.nan  # a chunk keeps no epochs per candidate
    cols["duration_s"] = np.nan
    failures = {int(i): why for c in chunks for i, why in c.failures.items()}
    if failures:  # a failed candidate has no metrics: no derived values either
        failed = np.isin(indices, list(failures))
        cols["state"] = np.where(failed, "failed", cols["state"])
        cols["reason"] = [failures.get(i, r) for i, r in zip(indices.tolist(), cols["reason"],
                                                             strict=True)]  # fmt: skip
    frame = pd.DataFrame(cols)[csv_columns(space, objective, names)]
    for col in frame.select_dtypes(include=[object, "string"]).columns:  # as read back from the CSV
        frame[col] = frame[col].replace("", np.nan)
    return frame


class Bitset:
    """Which candidates of a space are done, one bit each (a set of a million ints would
    take about 60 MB, this 125 KB)."""

    def __init__(self, size: int) -> None:
        self.bits = np.zeros((size + 7) // 8, dtype=np.uint8)

    def __contains__(self, index: object) -> bool:
        i = int(index)  # type: ignore[call-overload]
        return bool(self.bits[i >> 3] & (1 << (i & 7)))

    def add(self, index: int) -> None:
        self.bits[index >> 3] |= np.uint8(1 << (index & 7))

    def add_many(self, indices: np.ndarray) -> None:
        np.bitwise_or.at(self.bits, indices >> 3, (1 << (indices & 7)).astype(np.uint8))


class TrialsCsv:
    """`trials.csv`: rewritten whole from the store (at the start and the end of a search) and
    appended to as this worker's trials finish, so it is current while a search runs."""

    def __init__(
        self,
        path: Path,
        source: TrialSource,
        space: SearchSpace,
        objective: Objective,
        metric_names: Sequence[str],
    ) -> None:
        self.path, self.source, self.space, self.objective = path, source, space, objective
        self.names = list(dict.fromkeys([*objective.names, *metric_names]))
        self.columns = csv_columns(space, objective, self.names)
        # read once: the attr is set when the study is opened, and each read of a journal
        # store syncs with its file (it would be I/O per candidate in `append`)
        self.chunked = source.is_chunked()
        self.appended: set[int] = set()  # chunks whose rows are in the file
        self.written = Bitset(space.size)  # and their candidates
        # unchunked: the trials of the file's rows, in order; None once a row may be stale
        self.lines: list[int] | None = []
        # open while trials are appended (an open and a close a row cost a brute force 0.5%
        # of its time); closed by `finish`, and before the file is written anew
        self._appending: tuple[TextIO, csv.DictWriter] | None = None

    def rewrite(self) -> int:
        """Write every trial of the study (atomically); return the row count. A chunked
        study is written chunk by chunk, so memory holds one chunk's rows at a time."""
        self.close()
        with atomic(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = self._writer(f)
            writer.writeheader()
            if self.chunked:
                chunks = self.source.chunks()
                self.appended = {c.number for c in chunks}
                return sum(self._write_chunk(f, c) for c in chunks)
            rows, _ = trial_rows(self.source, self.space, self.objective, self.names)
            writer.writerows(rows)
        settled = not any(r["state"] in UNSETTLED for r in rows)
        self.lines = [r["number"] for r in rows] if settled else None
        return len(rows)

    def _write_chunk(self, f: TextIO, chunk: Chunk) -> int:
        frame = chunk_frame([chunk], self.space, self.objective, self.names)
        self.written.add_many(frame["number"].to_numpy())
        frame.to_csv(f, header=False, index=False, lineterminator="\n")
        return len(frame)

    def finish(self, frame: "pd.DataFrame | None" = None) -> None:
        """Bring the file up to date at the end of a search: a chunked study's rows already
        in it stay (rewriting a million rows takes half a minute), the rest are added. An
        unchunked file is written again unless `frame` (the study's trials, as `trials_frame`
        read them at the end) shows it holds them all already, in their order, each row
        written once its trial had finished (a one-worker search: 0.04 s of 1,000 trials)."""
        self.close()
        if self.chunked and self.path.exists():
            self._catch_up()
        elif frame is None or not self._holds(frame):
            self.rewrite()

    def close(self) -> None:
        """Close the file rows were appended to (each row is written when appended)."""
        if self._appending is not None:
            f, _ = self._appending
            self._appending = None
            f.close()

    def _holds(self, frame: "pd.DataFrame") -> bool:
        return (
            self.lines is not None
            and self.path.exists()
            and frame["number"].tolist() == self.lines
            and not frame["state"].isin(UNSETTLED).any()
        )

    def _writer(self, f: TextIO) -> csv.DictWriter:
        return csv.DictWriter(
            f, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n"
        )

    def append(self, number: int) -> None:
        """Add the finished trial `number`; in a chunked study, `number` is a candidate's
        index, and every finished chunk not yet in the file is added (so each chunk once)."""
        if not self.chunked:
            trial = self.source.trial_row(number)
            if self._appending is None:
                opened = self.path.open("a", newline="")
                self._appending = (opened, self._writer(opened))
            f, writer = self._appending
            writer.writerow(_row(trial, self.space, self.objective, self.names))
            f.flush()  # in the file for any reader, as each trial ends
            if self.lines is not None:
                self.lines.append(int(trial["number"]))
        elif number not in self.written:
            self._catch_up()

    def _catch_up(self) -> None:
        with self.path.open("a", newline="") as f:
            for chunk in self.source.chunks(skip=self.appended):
                self.appended.add(chunk.number)
                self._write_chunk(f, chunk)


def trials_frame(
    source: TrialSource, space: SearchSpace, objective: Objective, metric_names: Sequence[str]
) -> "pd.DataFrame":
    """trials.csv as a DataFrame, straight from the study (empty cells are NaN)."""
    import pandas as pd  # 0.3 s: imported once a search needs its results

    if source.is_chunked():
        names = list(dict.fromkeys([*objective.names, *metric_names]))
        return chunk_frame(source.chunks(), space, objective, names)
    rows, columns = trial_rows(source, space, objective, metric_names)
    frame = pd.DataFrame(rows, columns=columns)
    return frame.replace("", float("nan")).infer_objects()
