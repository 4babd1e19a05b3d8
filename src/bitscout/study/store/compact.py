"""A journal's trials held in memory once, not once per trial.

Optuna's `JournalStorage` replays every record into a `FrozenTrial` and keeps them all: a
brute force over 20,736 candidates holds 20,736 trials. Each came out of `json.loads` with its
own copy of every attribute name and parameter name, and out of `json_to_distribution` with
its own distribution objects, which are the same for every trial of a search: 5-6 KB a trial,
so an unchunked brute force grew by 120 MB. `CompactJournal` shares them after each replay:
names are interned, and trials with the same distributions share one table of them.

The Optuna internals used here, and why no public API serves:
`JournalStorage._sync_with_backend` (every read and write of a JournalStorage replays the new
records through it), and of `JournalStorage._replay_result` its `_trials` (the trials it
keeps, by id: the only copy of them that lasts) and `log_number_read` (whether a sync read
anything). A shared table is never changed in place: Optuna's replay builds a new table for a
trial it updates (`{**copy.copy(trial.distributions), ...}`), and readers get deep copies.
"""

import sys
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial

from bitscout.study.store.base import METRICS

_Key = tuple[Any, ...]


class CompactJournal(JournalStorage):
    """A `JournalStorage` whose trials share their names and distributions once replayed."""

    def __init__(self, log_storage: BaseJournalBackend) -> None:
        self._compactor = _Compactor()  # before the first replay, which __init__ runs
        super().__init__(log_storage)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)  # a new, empty replay: its trials are new too
        self._compactor = _Compactor()

    def _sync_with_backend(self) -> None:
        replay = self._replay_result
        read = replay.log_number_read
        super()._sync_with_backend()
        if replay.log_number_read != read:  # most syncs find nothing new: nothing to do
            self._compactor.run(replay._trials)


class _Compactor:
    """Compacts each trial once it has finished: a running trial still gains parameters and
    attributes, each update in tables of its own."""

    def __init__(self) -> None:
        self.seen = 0  # trial ids below this were seen
        self.running: set[int] = set()  # seen, not finished yet
        self.tables: dict[_Key, dict[str, BaseDistribution]] = {}

    def run(self, trials: dict[int, FrozenTrial]) -> None:
        new = range(self.seen, len(trials))
        for trial_id in [*self.running, *new] if self.running else new:
            trial = trials[trial_id]
            if trial.state.is_finished():
                self._compact(trial)
                self.running.discard(trial_id)
            else:
                self.running.add(trial_id)
        self.seen = len(trials)

    def _compact(self, trial: FrozenTrial) -> None:
        trial.user_attrs = _interned(trial.user_attrs)
        dists = trial.distributions
        if not dists:
            return
        key = tuple((name, _identity(d)) for name, d in dists.items())
        table = self.tables.get(key)
        if table is None:
            table = self.tables[key] = {sys.intern(name): d for name, d in dists.items()}
        trial.distributions = table
        trial.params = {sys.intern(name): value for name, value in trial.params.items()}


def _interned(attrs: dict[str, Any]) -> dict[str, Any]:
    """`attrs` with its names (and the names of the dicts it holds, and its short strings)
    interned: a search's trials share them. A metric stored twice (in `metrics` and as an
    attribute of its own) is held once."""
    metrics = attrs.get(METRICS)
    metrics = _interned(metrics) if type(metrics) is dict else {}
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if name == METRICS and metrics:
            value = metrics
        elif type(value) is dict:
            value = _interned(value)
        elif type(value) is str and len(value) <= 64:
            value = sys.intern(value)
        elif type(value) is float and metrics.get(name) == value:
            value = metrics[name]
        out[sys.intern(name)] = value
    return out


def _identity(dist: BaseDistribution) -> _Key:
    """What tells two distributions apart, types included (a choice True equals 1, but is
    not the same choice)."""
    return (type(dist), *((k, _typed(v)) for k, v in sorted(vars(dist).items())))


def _typed(value: Any) -> Any:
    if type(value) is tuple:
        return tuple((type(v), v) for v in value)
    return (type(value), value)
