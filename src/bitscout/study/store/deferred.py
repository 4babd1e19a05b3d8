"""A trial's result in one journal append, and the journal's fsync held back up to a second.

Optuna's ask/tell writes every parameter, user attribute and the final state of a trial as a
record of its own: about 20 appends a trial on bitscout's search, each under the journal's
file lock and each followed by an fsync (1 to 4 ms on a local disk), so the store cost more
than evaluating the candidate. Here a trial takes three appends and no fsync of its own:

- `DeferredWrites` stands in front of a `JournalStorage`. A trial this process asks Optuna
  for is created RUNNING at once, stamped with its worker (its number is taken atomically and
  every worker sees it running, and whose it is). The writes to it are then held in memory
  and sent as one append when the strategy publishes its config (`Store.publish`, before it
  is evaluated: other workers' samplers see what runs, a crash re-runs that config), and
  once more when it ends: every attribute, its values and its state together, so no reader
  ever sees half a result. A heartbeat or a fidelity rung is sent at once (other workers
  judge liveness and prune by them). This process reads its held writes as if written.
- A batch of finished trials (a brute force's candidates evaluated together) is created in
  one append (`create_new_trials`): a crash keeps all of them or none.
- `WriteBehindFile` is Optuna's journal file appending without an fsync per append: a
  record is in the file (every process sees it, a SIGKILL cannot take it back) when the
  append returns, and on the disk at most `SYNC_S` later (a power loss or a crash of the
  machine can take the last second's records: those trials run again on resume).

The Optuna internals used here, and why no public API serves (the other ones are listed in
`optuna_store.py`):

- `JournalStorage._backend`: swapped for a collector while the held writes are replayed
  through JournalStorage's own methods, so the records are Optuna's own, then appended
  together; `JournalStorage._thread_lock` and `_sync_with_backend`: reading them back as
  every JournalStorage write does. `Storage` methods have no batch form.
  `_replay_result._last_created_trial_id_by_this_process`: the id of the last trial of a
  batch of whole trials (`create_new_trials`, a brute-force batch in one append), which is
  how JournalStorage's own `create_new_trial` learns its trial's id.
- `optuna.storages.journal._storage.json_to_distribution`, the name Optuna's journal replay
  calls to make each trial's distributions from their JSON (a `json.loads` and a validation
  each: 40 us a trial of 8 dimensions, 1.5% of a brute force's time): replaced by a cached
  one, so the same JSON gives the same distribution object, as `compact.py`'s shared tables
  did after the replay already (a distribution is never changed once made; readers get deep
  copies). Optuna has no hook into its replay.
- `optuna.storages.journal._file.get_lock_file` with `JournalFileBackend._lock` and
  `_file_path`: the append under Optuna's own lock, without its fsync;
  `JournalFileBackend._log_number_offset` (where each record read so far begins): a read
  finds the file unchanged by a stat instead of opening it, and a write reads its own records
  back from memory when the file ends with them (nobody appended before or after them); it
  keeps only the offset the next read starts from (Optuna keeps one a record, ever).
"""

import copy
import functools
import json
import os
import threading
from collections.abc import Container, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, _storage
from optuna.storages.journal._file import get_lock_file
from optuna.study._frozen import FrozenStudy
from optuna.study._study_direction import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from bitscout.study.store.base import HEARTBEAT, WORKER
from bitscout.study.store.liveness import worker_id

SYNC_S = 1.0  # the longest a record stays in the page cache only
# Optuna's `json.dumps(log, separators=...)`, byte for byte, without building an encoder per
# record (that costs 60% of each record's encoding: 0.25 ms of a trial's 25 records)
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class WriteBehindFile(JournalFileBackend):
    """Optuna's journal file, its fsync held back up to `SYNC_S` (one per second at most). An
    fsync that fails is raised by the next append."""

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()
        self._failed: OSError | None = None
        self._written: tuple[int, list[str]] | None = None  # the last append: where, what

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        lines = [_ENCODE(log) + "\n" for log in logs]  # ASCII: json escapes the rest
        with get_lock_file(self._lock), open(self._file_path, "ab") as f:
            begin = f.tell()  # the end of the file: every writer appends under this lock
            f.write("".join(lines).encode("utf-8"))
        self._written = (begin, lines)
        with self._timer_lock:
            if self._timer is None:
                self._timer = threading.Timer(SYNC_S, self._sync_quietly)
                self._timer.daemon = True
                self._timer.start()

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        # every read of a JournalStorage syncs first (a write reads itself back): a stat, not
        # an open, when nothing changed or when the file ends with this process's last append
        start = self._log_number_offset.get(log_number_from)
        size = os.stat(self._file_path).st_size
        if start is not None and start == size:
            return
        written, self._written = self._written, None
        if written is not None and start == written[0]:
            begin, lines = written
            if size == begin + sum(map(len, lines)):
                offsets = self._log_number_offset = {}  # a refused record stops the replay
                # part-way, and the next read goes on after it: each record's end is kept
                for number, line in enumerate(lines, start=log_number_from + 1):
                    begin += len(line)
                    offsets[number] = begin
                yield from map(json.loads, lines)
                return
        if start is None:  # Optuna reads from the start then, counting records as it goes
            self._log_number_offset = {0: 0}
        yield from super().read_logs(log_number_from)
        # a journal reads on from where it stopped, nowhere else: of the offsets Optuna notes
        # (one a record, 18 a TPE trial), the last one is all that is read again
        last = max(self._log_number_offset)
        self._log_number_offset = {last: self._log_number_offset[last]}

    def sync(self) -> None:
        """Everything appended so far onto the disk."""
        with self._timer_lock:
            timer, self._timer = self._timer, None
        if timer is None:
            return
        timer.cancel()
        try:
            fd = os.open(self._file_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise OSError(err.errno, err.strerror, self._file_path) from None

    def _sync_quietly(self) -> None:
        try:
            self.sync()
        except OSError as err:  # the disk failed: the search learns it at its next write
            self._failed = err


def _copy(trial: FrozenTrial) -> FrozenTrial:
    """`trial` with its own attribute tables (their values are never changed in place)."""
    trial = copy.copy(trial)
    for name in ("params", "distributions", "user_attrs", "system_attrs"):
        setattr(trial, name, dict(getattr(trial, name)))
    trial.intermediate_values = dict(trial.intermediate_values)
    return trial


def _unread() -> None:
    """Stands for a JournalStorage's read-back while its records are collected."""


class _Collector(BaseJournalBackend):
    """Takes JournalStorage's records instead of its file, and reads nothing back."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.logs.extend(logs)

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        return iter(())


@dataclass
class _Held:
    trial: FrozenTrial  # as this process sees it: the store's, with the held writes applied
    calls: list[tuple[str, tuple]] = field(default_factory=list)  # JournalStorage's methods


def _share_distributions() -> None:
    """Every journal replay in this process makes one distribution per JSON text (a search
    has a few dozen), not one per trial and parameter."""
    if not hasattr(_storage.json_to_distribution, "cache_info"):
        cached = functools.lru_cache(maxsize=4096)(_storage.json_to_distribution)
        _storage.json_to_distribution = cached


class DeferredWrites(BaseStorage):
    """`inner` with the writes to the trials this process asked for held until each ends."""

    def __init__(self, inner: JournalStorage) -> None:
        _share_distributions()
        self.inner = inner
        self._lock = threading.RLock()
        self._held: dict[int, _Held] = {}

    def sync(self) -> None:
        """Runs when a search ends: its records onto the disk."""
        with self._lock:
            backend = self.inner._backend
        if isinstance(backend, WriteBehindFile):
            backend.sync()

    # --- trials: held while this process runs them ---------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None:  # a whole trial (the Store's writes): one record already
            return self._passed("create_new_trial", study_id, template_trial)
        running = optuna.trial.create_trial(state=TrialState.RUNNING,
                                            user_attrs={WORKER: worker_id()})  # fmt: skip
        with self._lock:
            trial_id = self.inner.create_new_trial(study_id, running)
            self._hold(trial_id)
        return trial_id

    def create_new_trials(self, study_id: int, templates: Sequence[FrozenTrial]) -> list[int]:
        """Whole trials (finished ones: nothing is held) in one append; their ids, in order."""
        calls = [("create_new_trial", (study_id, t)) for t in templates]
        with self._lock:
            logs = self._records(calls)
            inner = self.inner
            with inner._thread_lock:
                inner._backend.append_logs(logs)
                inner._sync_with_backend()
                # one append is read back in one piece: its trials took consecutive ids
                last = inner._replay_result._last_created_trial_id_by_this_process
        return list(range(last - len(templates) + 1, last + 1))

    def _hold(self, trial_id: int) -> None:
        self._held[trial_id] = _Held(_copy(self.inner.get_trial(trial_id)))

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with self._lock:
            if trial_id not in self._held:
                popped = self.inner.set_trial_state_values(trial_id, state, values)
                if popped and state == TrialState.RUNNING:  # a queued trial this process runs
                    self.inner.set_trial_user_attr(trial_id, WORKER, worker_id())
                    self._hold(trial_id)
                return popped
            self._held[trial_id].calls.append(("set_trial_state_values", (trial_id, state, values)))
            if state.is_finished():
                try:
                    self._send(trial_id)
                finally:  # sent, refused or failed: from now on the store's word on it stands
                    del self._held[trial_id]
            return True

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:  # fmt: skip
        args = (trial_id, param_name, param_value_internal, distribution)
        with self._lock:
            held = self._write("set_trial_param", args)
            if held is not None:
                value = distribution.to_external_repr(param_value_internal)
                held.trial.params[param_name] = value
                held.trial.distributions[param_name] = distribution

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            held = self._write("set_trial_user_attr", (trial_id, key, value))
            if held is not None:
                held.trial.user_attrs[key] = value
                if key == HEARTBEAT:  # other workers judge its liveness by it
                    self._send(trial_id)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        with self._lock:
            held = self._write("set_trial_system_attr", (trial_id, key, value))
            if held is not None:
                held.trial.system_attrs[key] = value

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        with self._lock:
            held = self._write("set_trial_intermediate_value", (trial_id, step, value))
            if held is not None:
                held.trial.intermediate_values[step] = value
                self._send(trial_id)  # other workers' pruners compare against it

    def _write(self, name: str, args: tuple) -> _Held | None:
        """JournalStorage's write `name(*args)` held with its trial's (returned, for the
        caller to apply to the trial as seen here), or made at once for a trial not held."""
        held = self._held.get(args[0])
        if held is None:
            getattr(self.inner, name)(*args)
        else:
            held.calls.append((name, args))
        return held

    def send(self, trial_id: int) -> None:
        """What `trial_id` has written so far, to the journal now (one append)."""
        with self._lock:
            if trial_id in self._held:
                self._send(trial_id)

    def _send(self, trial_id: int) -> None:
        """The held writes of `trial_id` as one append, then read back as JournalStorage reads
        its own writes (raising `UpdateFinishedTrialError` if another worker ended it)."""
        held = self._held[trial_id]
        calls, held.calls = held.calls, []
        if not calls:
            return
        logs = self._records(calls)
        inner = self.inner
        with inner._thread_lock:
            inner._backend.append_logs(logs)
            finished: UpdateFinishedTrialError | None = None
            while True:  # each refused record of the batch raises once: read past all of them
                try:
                    inner._sync_with_backend()
                    break
                except UpdateFinishedTrialError as err:
                    finished = finished or err
        if finished is not None:
            raise finished

    def _records(self, calls: list[tuple[str, tuple]]) -> list[dict[str, Any]]:
        """The records JournalStorage writes for `calls`, unwritten."""
        inner, collector = self.inner, _Collector()
        backend, inner._backend = inner._backend, collector
        # each method reads back what it wrote: from the collector, nothing (18 reads a trial)
        inner._sync_with_backend = _unread  # type: ignore[method-assign]
        try:
            for name, args in calls:
                getattr(inner, name)(*args)
        finally:
            inner._backend = backend
            del inner._sync_with_backend
        return collector.logs

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            held = self._held.get(trial_id)
            return _copy(held.trial) if held else self.inner.get_trial(trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        with self._lock:
            trials = self.inner.get_all_trials(study_id, deepcopy=False, states=states)
            if self._held:
                trials = [self._held[t._trial_id].trial if t._trial_id in self._held else t
                          for t in trials]  # fmt: skip
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._passed("get_trial_id_from_study_id_trial_number", study_id, trial_number)

    # --- studies: as the journal has them -------------------------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        return self._passed("create_new_study", directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._passed("delete_study", study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._passed("set_study_user_attr", study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._passed("set_study_system_attr", study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._passed("get_study_id_from_name", study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._passed("get_study_name_from_id", study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._passed("get_study_directions", study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._passed("get_study_user_attrs", study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._passed("get_study_system_attrs", study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._passed("get_all_studies")

    def _passed(self, name: str, *args: Any) -> Any:
        """`inner.name(*args)`, never while a batch is collected (`_records` swaps the
        backend, and a heartbeat sends from its own thread)."""
        with self._lock:
            return getattr(self.inner, name)(*args)
