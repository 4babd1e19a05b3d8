"""`OptunaStore`: the `Store` kept in an Optuna study. With `deferred.py` (a journal's writes
batched, which needs JournalStorage's own internals, listed there) it is the only module of
bitscout that touches Optuna's internals. Everything else, samplers included, goes through
Optuna's public API (`Study.optimize`, `enqueue_trial`, `Trial.set_user_attr`,
`create_trial`, `get_trials`, `optuna.importance`). If an Optuna release changes one of the
names below, only these two files change. The private names that remain, and why no public
API serves:

- `Study._storage`, `Study._study_id` and the storage methods
  `create_new_trial(study_id, template_trial=...)` and `get_trial_number_from_id`: a trial
  added in one write, in any state (a RUNNING chunk token with its params and worker; a
  scored candidate complete with its attributes), with its number back. `Study.add_trial`
  takes only finished trials and returns nothing, and `ask` after `enqueue_trial` takes the
  oldest queued trial of *any* worker, so neither can claim a chunk.
- `set_trial_user_attr`, `set_trial_system_attr`, `set_trial_state_values` on the storage:
  writing to a trial this process holds no `optuna.Trial` for (a chunk token, another
  worker's stale trial). Failing a stale trial this way is atomic in every storage, so of
  several racing workers exactly one fails it (the others get `UpdateFinishedTrialError`).
- `get_trial_id_from_study_id_trial_number` and `get_trial`: one trial by number
  (`Study.trials[n]` reads every trial, which for a journal means syncing the whole file).
- `FrozenTrial._trial_id`: the handle those storage methods take.
- The journal's record format (`JOURNAL_RECORD_START`): repairing a journal torn by a crash
  needs to find where a whole record begins after a torn one. Optuna has no repair.

The constraint keys are not hard-coded: the system attrs a finished token gets are those
`optuna.trial.create_trial(constraints=...)` writes, in whatever form this Optuna uses.
"""

import contextlib
import functools
import os
import traceback
from collections.abc import Container, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages.journal import JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState

from bitscout.errors import SearchFailed
from bitscout.quant.space import Choice, SearchSpace
from bitscout.results.trials import Chunk, Result
from bitscout.study.chunks import chunk_of, is_chunk
from bitscout.study.store import deferred
from bitscout.study.store.base import (
    FAILURE,
    INTERRUPTED,
    PRUNED,
    REASON,
    WORKER,
    Leased,
    State,
    Store,
    TrialFinished,
    TrialRecord,
    TrialRef,
    finish_order,
    result_attrs,
)
from bitscout.study.store.deferred import DeferredWrites
from bitscout.study.store.journal import repair
from bitscout.study.store.liveness import is_stale, worker_id
from bitscout.study.store.secrets import mask_password, scrub

JOURNAL_RECORD_START = b'{"op_code":'  # how every record Optuna's journal writes begins
SQLITE_HEADER = b"SQLite format 3\x00"
# where Optuna's storages write, and bitscout's batched journal writes: an OSError raised
# there is the store's
STORAGE_CODE = (os.path.join(os.sep, "optuna", "storages", ""), deferred.__file__)
STATES: dict[TrialState, State] = {
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
    TrialState.COMPLETE: "complete",
    TrialState.FAIL: "failed",
    TrialState.PRUNED: "pruned",
}


@contextlib.contextmanager
def _journal_lock(path: Path) -> Iterator[None]:
    """The lock every writer of the journal at `path` takes (JournalFileBackend's default)."""
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def is_journal(path: Path) -> bool:
    """Whether `path` may be opened as a journal: absent, empty, or beginning as Optuna's
    records begin (a first record torn short included)."""
    if not path.is_file():
        return True
    with path.open("rb") as f:
        head = f.read(len(JOURNAL_RECORD_START))
    return head == JOURNAL_RECORD_START[: len(head)]


def is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def repair_journal(path: str | Path, *, full: bool = False) -> str | None:
    """`journal.repair` for an Optuna journal file; see there."""
    return repair(path, lambda: _journal_lock(Path(path)), JOURNAL_RECORD_START, full=full)


def _constraint_attrs(violations: Mapping[str, float]) -> dict[str, Any]:
    """The system attrs a trial with these constraint values has, as Optuna stores
    `create_trial(constraints=...)` (see the docstring); none without constraints."""
    if not violations:
        return {}
    return dict(optuna.trial.create_trial(value=0.0, constraints=dict(violations)).system_attrs)


@contextlib.contextmanager
def _finished_is_error() -> Iterator[None]:
    try:
        yield
    except UpdateFinishedTrialError as err:
        raise TrialFinished(str(err)) from err


def _store_error(err: BaseException) -> OSError | StorageInternalError | None:
    """The error an Optuna storage raised, behind `err` or `err` itself: a write that failed
    inside `Study.optimize` resurfaces as `AssertionError: Should not reach` (Optuna could
    not record the trial's end), with the storage's error as its context."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, StorageInternalError):
            return seen
        if isinstance(seen, OSError):
            frames = traceback.extract_tb(seen.__traceback__)
            ours = any(code in f.filename for f in frames for code in STORAGE_CODE)
            return seen if ours else None
        seen = seen.__cause__ or seen.__context__
    return None


class OptunaStore(Store):
    """A `Store` on `study`, whose params are dimensions of `space`, kept at `url` (a
    journal's path or an RDB URL, which errors name without its password)."""

    def __init__(self, study: optuna.Study, space: SearchSpace, url: str | None = None) -> None:
        self.study = study
        self.space = space
        self._url = url
        self.location = None if url is None else mask_password(url)
        self._storage = study._storage
        self._study_id = study._study_id
        self._finished: dict[int, TrialRecord] = {}  # finished trials never change

    def _distributions(self, config: Mapping[str, Choice]) -> dict[str, BaseDistribution]:
        """The distributions of the dimensions `config` sets (a field that its format does not
        take is not a parameter of the trial)."""
        return {name: dist for name, dist in self._all.items() if name in config}

    @functools.cached_property
    def _all(self) -> dict[str, BaseDistribution]:
        """Every dimension's distribution, made once: Optuna validates a distribution's
        choices as it is made, and never changes one."""
        return {d.name: CategoricalDistribution(d.choices) for d in self.space.dimensions}

    def _add(self, template: FrozenTrial) -> TrialRef:
        return self._storage.create_new_trial(self._study_id, template_trial=template)

    def _template(
        self, config: Mapping[str, Choice], result: Result, attrs: Mapping[str, Any] | None
    ) -> FrozenTrial:
        failed = result.failure is not None
        state = TrialState.FAIL if failed else TrialState.COMPLETE
        if result.pruned:
            state = TrialState.PRUNED
        # what `create_trial` makes, without its checks of params against distributions, both
        # made from the space here (40 us a trial of 8 dimensions against 2: 1% of a brute force)
        now = datetime.now()
        return FrozenTrial(
            number=-1,
            trial_id=-1,
            state=state,
            value=None,
            values=None if state != TrialState.COMPLETE else result.values,
            datetime_start=now,
            datetime_complete=now,
            params=dict(config),
            distributions=self._distributions(config),
            user_attrs={WORKER: worker_id(), **(attrs or {}), **result_attrs(result)},
            system_attrs={} if failed else _constraint_attrs(result.violations),
            intermediate_values={},
        )

    def record(
        self, config: Mapping[str, Choice], result: Result, attrs: Mapping[str, Any] | None = None
    ) -> int:
        return self.number_of(self._add(self._template(config, result, attrs)))

    def record_many(
        self, scored: Sequence[tuple[Mapping[str, Choice], Result]], attrs: Mapping[str, Any]
    ) -> list[int]:
        if not isinstance(self._storage, DeferredWrites):
            return super().record_many(scored, attrs)
        templates = [self._template(config, result, attrs) for config, result in scored]
        refs = self._storage.create_new_trials(self._study_id, templates)
        return [self.number_of(ref) for ref in refs]

    def start(self, config: Mapping[str, Choice], attrs: Mapping[str, Any]) -> TrialRef:
        trial = optuna.trial.create_trial(
            params=dict(config),
            distributions=self._distributions(config),
            user_attrs={WORKER: worker_id(), **attrs},
            state=TrialState.RUNNING,
        )
        return self._add(trial)

    def publish(self, number: int) -> None:
        if isinstance(self._storage, DeferredWrites):
            ref = self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
            self._storage.send(ref)

    def number_of(self, ref: TrialRef) -> int:
        return self._storage.get_trial_number_from_id(ref)

    def set_attr(self, ref: TrialRef, key: str, value: Any) -> None:
        with _finished_is_error():
            self._storage.set_trial_user_attr(ref, key, value)

    def _end(self, ref: TrialRef, state: TrialState, values: Sequence[float] | None = None) -> None:
        with _finished_is_error():
            self._storage.set_trial_state_values(ref, state, values)

    def finish(self, ref: TrialRef, result: Result, attrs: Mapping[str, Any] | None = None) -> None:
        for key, value in {**(attrs or {}), **result_attrs(result)}.items():
            self.set_attr(ref, key, value)
        if result.failure is not None:
            self._end(ref, TrialState.FAIL)
            return
        if result.violations:
            for key, value in _constraint_attrs(result.violations).items():
                with _finished_is_error():
                    self._storage.set_trial_system_attr(ref, key, value)
        self._end(ref, TrialState.COMPLETE, result.values)

    def abandon(self, ref: TrialRef, state: Literal["failed", "pruned"], reason: str) -> None:
        self.set_attr(ref, FAILURE, INTERRUPTED if state == "failed" else PRUNED)
        self.set_attr(ref, REASON, reason)
        self._end(ref, TrialState.FAIL if state == "failed" else TrialState.PRUNED)

    def _record(self, trial: FrozenTrial) -> TrialRecord:
        ref = trial._trial_id
        known = self._finished.get(ref)
        if known is not None:
            return known
        record = TrialRecord(
            ref=ref,
            number=trial.number,
            state=STATES[trial.state],
            params=trial.params,
            user_attrs=trial.user_attrs,
            values=trial.values,
            started=trial.datetime_start,
            finished=trial.datetime_complete,
        )
        if trial.state.is_finished():
            self._finished[ref] = record
        return record

    def trials(self, states: Container[State] | None = None) -> list[TrialRecord]:
        wanted = None if states is None else tuple(s for s in STATES if STATES[s] in states)
        return [self._record(t) for t in self.study.get_trials(deepcopy=False, states=wanted)]

    def trials_from(self, number: int) -> list[TrialRecord]:
        # a trial's number is its place in the study (every Optuna storage numbers them so):
        # the trials below it are not looked at
        return [self._record(t) for t in self.study.get_trials(deepcopy=False)[number:]]

    def trial(self, number: int) -> TrialRecord:
        ref = self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
        return self._record(self._storage.get_trial(ref))

    def fail_stale(self) -> list[TrialRecord]:
        failed = []
        for trial in self.trials(("running",)):
            if not is_stale(trial):
                continue
            worker = trial.user_attrs.get(WORKER, "an unknown worker")
            try:
                reason = f"{INTERRUPTED}: worker {worker} stopped mid-trial"
                self.abandon(trial.ref, "failed", reason)
            except TrialFinished:
                continue  # another worker got there first
            failed.append(trial)
        return failed

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        try:
            try:
                yield
            except BaseException:
                self._fail_own()
                raise
            if isinstance(self._storage, DeferredWrites):  # the run's last records on disk
                self._storage.sync()
        except (OSError, AssertionError, StorageInternalError) as err:
            cause = _store_error(err)
            if cause is None or (cause is err and getattr(err, "filename", None) is not None):
                raise
            if isinstance(cause, StorageInternalError):  # an RDB's driver: it may print the URL
                text = scrub(" ".join(f"{cause} {cause.__cause__ or ''}".split()), self._url)
                raise SearchFailed(f"the store {self.location} failed: {text}") from None
            where = cause.filename if cause.filename is not None else self.location
            raise OSError(cause.errno, cause.strerror, where) from None

    def _fail_own(self) -> None:
        """Record this worker's RUNNING trials as interrupted: an interrupt that lands between
        two of a strategy's steps (a chunk claimed, its `try` not yet entered) leaves one
        running, and no later run of this worker ends it. The error that stopped the run is
        the one reported, so a store failing here again is not."""
        with contextlib.suppress(Exception):
            for trial in self.trials(("running",)):
                if trial.user_attrs.get(WORKER) == worker_id():
                    with contextlib.suppress(TrialFinished):
                        self.abandon(trial.ref, "failed", f"{INTERRUPTED}: search stopped")

    def lease(self, purpose: str) -> TrialRef:
        name = f"{self.study.study_name}.{purpose}"  # a companion study: no trial of the search
        leases = optuna.create_study(
            storage=self._storage,
            study_name=name,
            load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(),  # never asked: spares TPE's construction
        )
        mine = self._storage.create_new_trial(
            leases._study_id,
            template_trial=optuna.trial.create_trial(
                state=TrialState.RUNNING, user_attrs={WORKER: worker_id()}
            ),
        )
        live = []
        for trial in leases.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            record = self._record(trial)
            if not is_stale(record):
                live.append(record)
            elif record.ref != mine:
                with contextlib.suppress(TrialFinished):  # another worker got there first
                    self.abandon(record.ref, "failed", f"{INTERRUPTED}: its worker is gone")
        holder = min(live, key=lambda t: t.number)
        if holder.ref != mine:
            self.abandon(mine, "pruned", f"leased by {holder.user_attrs[WORKER]}")
            raise Leased(str(holder.user_attrs[WORKER]))
        return mine

    def release(self, ref: TrialRef) -> None:
        with contextlib.suppress(TrialFinished):
            self._end(ref, TrialState.COMPLETE, [0.0])

    def set_study_attr(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    def study_attr(self, key: str, default: Any = None) -> Any:
        return self.study.user_attrs.get(key, default)

    def chunks(self, skip: Container[int] = ()) -> list[Chunk]:
        tokens = [t for t in self.trials() if t.number not in skip and is_chunk(t)]
        return [chunk_of(t) for t in finish_order(tokens)]
