"""The Store: bitscout's interface to the record of a search, and the trial attributes it keeps.

Strategies and the run talk to a `Store`, never to Optuna's storage: they record trials,
claim chunks, count what ended and fail the work of dead workers through it, and the results
read it as a `TrialSource` (a pandas DataFrame and decoded chunks). `OptunaStore`
(`optuna_store.py`) implements it on an Optuna study, and is the only module that reaches
into Optuna's internals.
"""

import bisect
import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from bitscout.quant.space import Choice
from bitscout.results.trials import TRIAL_COLUMNS, Chunk, Result

if TYPE_CHECKING:
    import optuna
    import pandas as pd

# The trial attributes bitscout writes, each named once. A metric named like one of them is
# kept in METRICS only.
METRICS = "metrics"  # metric name -> value, of a candidate that ran
FEASIBLE = "feasible"
CACHED = "cached"  # the metrics came from the evaluator's cache
DURATION = "duration_s"
REASON = "reason"  # why it failed, is infeasible, was interrupted or pruned
FAILURE = "failure"  # ERROR (its own evaluation failed), INTERRUPTED or PRUNED
WORKER = "worker"  # host:pid:token of the process that started it
HEARTBEAT = "heartbeat"  # the time its worker last showed it is alive
CHUNK = "chunk"  # a brute-force token's chunk
QUOTA = "quota"  # candidates a token's claim may evaluate
CLAIM = "claim"  # the token number under which a streamed candidate ran
RETRY_OF = "retry_of"  # the interrupted trial an Optuna trial evaluates again
STEP = "step"  # a greedy walk's step
WARM_START = "warm_start"  # how a queued Optuna trial was proposed
ROWS = "rows"  # a chunked token's encoded results
COUNT = "count"  # how many candidates a chunked token stands for
FAILURES = "failures"  # a chunked token's failed candidates: index -> reason
METRIC_NAMES = "metric_names"  # the metric columns of ROWS
# epochs a trained candidate reached: the full count once complete, the rung a fidelity ladder
# pruned it at (0: its post-training score); a pruned trial with it ended (n_trials counts it)
EPOCHS = "epochs"
RUNGS = "rungs"  # a brute-force ladder's candidate: its metrics at each rung, by epochs
RESERVED_ATTRS = frozenset({
    METRICS, FEASIBLE, CACHED, DURATION, REASON, FAILURE, WORKER, HEARTBEAT, CHUNK, QUOTA,
    CLAIM, RETRY_OF, ROWS, COUNT, FAILURES, METRIC_NAMES, EPOCHS, RUNGS,
})  # fmt: skip
ERROR, INTERRUPTED, PRUNED = "error", "interrupted", "pruned"  # values of FAILURE
CHUNKED = "chunked"  # study attribute: one trial per chunk of candidates

State = Literal["running", "waiting", "complete", "failed", "pruned"]
TrialRef = int  # the store's handle of a trial (not its number)


class TrialFinished(Exception):
    """The trial was finished already (by another worker, or it ended meanwhile)."""


class Leased(Exception):
    """Work that one worker alone may do on a study is being done by `worker`, alive."""

    def __init__(self, worker: str) -> None:
        super().__init__(worker)
        self.worker = worker


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """One trial as the strategies read it."""

    ref: TrialRef
    number: int
    state: State
    params: Mapping[str, Choice]
    user_attrs: Mapping[str, Any]
    values: Sequence[float] | None
    started: datetime | None
    finished: datetime | None

    @property
    def metrics(self) -> Mapping[str, float]:
        return self.user_attrs.get(METRICS, {})


def result_attrs(result: Result) -> dict[str, Any]:
    """The attributes a scored candidate records: every metric also on its own, so
    optuna-dashboard and optuna.visualization can plot it."""
    if result.failure is not None:
        return {FAILURE: ERROR, REASON: result.failure, DURATION: result.duration_s}
    own = {k: v for k, v in result.metrics.items() if k not in RESERVED_ATTRS}
    extra: dict[str, Any] = {REASON: result.reason} if result.reason else {}
    if result.epochs is not None:
        extra[EPOCHS] = result.epochs
    return {
        METRICS: result.metrics,
        **own,
        FEASIBLE: result.feasible,
        CACHED: result.cached,
        DURATION: result.duration_s,
        **extra,
    }


def has_ended(trial: TrialRecord) -> bool:
    """Whether a trial ran to an end: complete with its metrics, pruned by a fidelity ladder
    (it spent budget; a claim lost to another worker did not), or failed by its own
    evaluation. An interrupted trial has not, even when its metrics were written before the
    interruption (it is evaluated again)."""
    if trial.state == "complete":
        return METRICS in trial.user_attrs
    if trial.state == "pruned":
        return EPOCHS in trial.user_attrs
    return trial.state == "failed" and trial.user_attrs.get(FAILURE) == ERROR


def candidates(trials: Iterable[TrialRecord]) -> int:
    """How many candidates `trials` evaluated: a chunked brute force's token stands for its
    whole chunk."""
    return sum(int(t.user_attrs.get(COUNT, 1)) for t in trials)


def finish_order(trials: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Trials in the order they finished (unfinished last, by number): a brute-force worker
    numbers its claim token first but finishes it last."""
    far = datetime.max.replace(tzinfo=UTC)

    def when(t: TrialRecord) -> tuple[datetime, int]:
        done = t.finished
        if done is None:
            return far, t.number
        return (done if done.tzinfo else done.astimezone(UTC)), t.number

    return sorted(trials, key=when)


def csv_state(trial: TrialRecord) -> str:
    """complete, infeasible, failed, running, waiting or pruned (by a fidelity ladder, or a
    claim lost to a worker)."""
    if trial.state != "complete":
        return trial.state
    return "complete" if trial.user_attrs.get(FEASIBLE, True) else "infeasible"


def row_of(trial: TrialRecord) -> dict[str, Any]:
    """`trial` as a row of `Store.frame`."""
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": csv_state(trial),
        "params": dict(trial.params),
        "metrics": dict(attrs.get(METRICS, {})),
        "values": list(trial.values) if trial.state == "complete" and trial.values else None,
        "cached": bool(attrs.get(CACHED, False)),
        "duration_s": attrs.get(DURATION),
        "reason": attrs.get(REASON),
        # a candidate scored without training trained 0 epochs
        "epochs": attrs.get(EPOCHS, 0 if METRICS in attrs else None),
    }


@dataclass
class Ended:
    """The trials that ran to an end, each read once: a finished trial never changes, so a
    read starts at the first trial not known to be finished."""

    upto: int = 0  # the trials numbered below this are finished and read
    later: set[int] = field(default_factory=set)  # finished trials read, numbered upto or more
    trials: list[TrialRecord] = field(default_factory=list)  # those that ended, by number
    count: int = 0  # `candidates(trials)`

    def read(self, fresh: Iterable[TrialRecord]) -> None:
        for t in fresh:
            if t.state in ("running", "waiting") or t.number in self.later:
                continue
            self.later.add(t.number)
            if has_ended(t):
                bisect.insort(self.trials, t, key=lambda r: r.number)
                self.count += candidates([t])
        while self.upto in self.later:
            self.later.remove(self.upto)
            self.upto += 1


class Store(ABC):
    """The record of one search, shared by every worker of it (processes, machines).

    Writes are atomic per call; trial numbers are handed out atomically, so workers can
    race on them (a brute-force claim is the lowest-numbered live token of its chunk). A
    strategy writes through `record` (a candidate scored in one go) or `start`, `set_attr`
    and `finish`/`abandon` (a trial that stays RUNNING while it works, such as a chunk's
    token). Reads are `trials` and the counts built on it; the results read it as a
    `bitscout.results.trials.TrialSource` (`is_chunked`, `frame`, `trial_row`, `chunks`).
    """

    study: "optuna.Study"  # what Optuna's samplers drive by ask/tell, and what users get

    @abstractmethod
    def record(
        self, config: Mapping[str, Choice], result: Result, attrs: Mapping[str, Any] | None = None
    ) -> int:
        """Runs when a candidate has been scored: adds it as a complete, pruned (a fidelity
        ladder stopped it: `result.pruned`) or failed trial in one write, with `attrs` besides
        the result's; returns its trial number."""

    def record_many(
        self, scored: Sequence[tuple[Mapping[str, Choice], Result]], attrs: Mapping[str, Any]
    ) -> list[int]:
        """`record` of each (config, result), all with `attrs`, written together where the
        store can (one append to a journal: a crash keeps all of them or none); their trial
        numbers, in order."""
        return [self.record(config, result, attrs) for config, result in scored]

    @abstractmethod
    def start(self, config: Mapping[str, Choice], attrs: Mapping[str, Any]) -> TrialRef:
        """Runs before a long piece of work (a chunk claim): a RUNNING trial for `config`,
        stamped with this worker, that `finish` or `abandon` ends."""

    def claim(self, config: Mapping[str, Choice], chunk: int, quota: int) -> TrialRef:
        """Runs when a brute-force worker claims `chunk`: its token, a RUNNING trial for the
        chunk's last pending candidate that may evaluate `quota` candidates. Of a chunk's live
        tokens the lowest-numbered owns it; a worker that loses prunes its token (`abandon`)."""
        return self.start(config, {CHUNK: chunk, QUOTA: quota})

    @abstractmethod
    def publish(self, number: int) -> None:
        """Runs when a sampler's trial `number` has its config, before it is evaluated: what
        it wrote so far reaches the store now (other workers see which config runs, and a
        crash runs that config again); its later writes may wait until it ends."""

    @abstractmethod
    def number_of(self, ref: TrialRef) -> int: ...

    @abstractmethod
    def set_attr(self, ref: TrialRef, key: str, value: Any) -> None:
        """Runs while a trial is RUNNING (a heartbeat, a smaller quota); raises
        `TrialFinished` once it is not."""

    @abstractmethod
    def finish(self, ref: TrialRef, result: Result, attrs: Mapping[str, Any] | None = None) -> None:
        """Runs when a started trial's own candidate is scored: complete (or fail) it with
        `result`, `attrs` written first."""

    @abstractmethod
    def abandon(self, ref: TrialRef, state: Literal["failed", "pruned"], reason: str) -> None:
        """Runs when a started trial will not be evaluated here: `failed` (interrupted, so
        evaluated again later) or `pruned` (a lost claim). Raises `TrialFinished` when it
        ended meanwhile."""

    @abstractmethod
    def trials(self, states: Container[State] | None = None) -> list[TrialRecord]:
        """Every trial (or those in `states`), by number, as the store has them now."""

    def trials_from(self, number: int) -> list[TrialRecord]:
        """The trials numbered `number` and above, by number: what a reader that has read the
        trials below `number` before has not seen yet."""
        return [t for t in self.trials() if t.number >= number]

    @abstractmethod
    def fail_stale(self) -> list[TrialRecord]:
        """Runs before a worker looks for work: records the RUNNING trials whose worker is
        gone as failed (interrupted) and returns those this call failed. Each is failed by
        exactly one of several racing workers."""

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a strategy's run, whose writes to the store (its own or an Optuna
        sampler's) fail as the machine fails: such an error leaves as one `OSError` naming
        the store; and however the run stops, none of this worker's trials is left RUNNING (an
        error or an interrupt fails them as interrupted on the way out: strategies rely on
        it). The base store lets every error through and fails nothing."""
        yield

    @abstractmethod
    def lease(self, purpose: str) -> TrialRef:
        """Runs before work one worker alone may do on the study (a greedy walk): this
        worker's lease for `purpose`, a RUNNING trial kept apart from the study's trials, to
        `set_attr` a heartbeat on and `release` at the end. Raises `Leased` naming the worker
        holding a live lease (of several racing workers, the lowest-numbered lease holds)."""

    @abstractmethod
    def release(self, ref: TrialRef) -> None:
        """Runs when the leased work ends, however it ends."""

    @abstractmethod
    def set_study_attr(self, key: str, value: Any) -> None: ...

    @abstractmethod
    def study_attr(self, key: str, default: Any = None) -> Any: ...

    def ended(self) -> list[TrialRecord]:
        """Trials that ran to an end (see `has_ended`), by number: what n_trials counts."""
        return list(self._ended().trials)

    def done(self) -> list[TrialRecord]:
        """Complete trials that carry metrics, in the order they finished."""
        complete = self.trials(("complete",))
        return finish_order(t for t in complete if METRICS in t.user_attrs)

    def ended_count(self) -> int:
        """Candidates evaluated to an end (what n_trials counts)."""
        return self._ended().count

    def _ended(self) -> "Ended":
        """The ended trials, brought up to date: a sampler's search asks before each trial,
        and reading every trial each time made a 1,000-trial search quadratic."""
        ended = self._ended_read
        ended.read(self.trials_from(ended.upto))
        return ended

    @functools.cached_property
    def _ended_read(self) -> Ended:
        return Ended()

    def is_chunked(self) -> bool:
        return bool(self.study_attr(CHUNKED))

    @abstractmethod
    def trial(self, number: int) -> TrialRecord: ...

    def frame(self) -> "pd.DataFrame":
        """Every trial in the order they finished, as `bitscout.results.trials.TRIAL_COLUMNS`;
        runs when trials.csv is written and when a search concludes."""
        import pandas as pd

        rows = [row_of(t) for t in finish_order(self.trials())]
        return pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))

    def trial_row(self, number: int) -> Mapping[str, Any]:
        """Trial `number` as a row of `frame`; runs as each of this worker's trials ends."""
        return row_of(self.trial(number))

    @abstractmethod
    def chunks(self, skip: Container[int] = ()) -> list[Chunk]:
        """A chunked study's finished chunks (numbers not in `skip`), in the order they
        finished; its other trials (interrupted or lost claims) hold no candidate."""
