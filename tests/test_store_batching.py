"""A trial's record reaches the journal in one append, and what that must not break: the
same records as an in-memory study, other workers seeing running trials at once and results
whole, a trial ended by another worker refused whole, a torn batch re-run, the fsync held
back but never lost."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState
from torch import nn

import bitscout
from bitscout.study import run
from bitscout.study.store import deferred, liveness
from bitscout.study.store.base import HEARTBEAT, WORKER
from bitscout.study.store.deferred import DeferredWrites, WriteBehindFile
from bitscout.study.store.optuna_store import OptunaStore, repair_journal

LAYER = {"name": ["integer"], "data_in_width": [4, 8], "weight_width": [2, 4, 8],
         "bias_width": [4, 8]}  # fmt: skip
SPACE = {"setup": {"by": "name"}, "seed": {"default": {"config": {"name": ["NA"]}},
                                           "0": {"config": LAYER}, "2": {"config": LAYER}}}  # fmt: skip
TRIALS = 10
UNSTABLE = {WORKER, "duration_s"}  # differ between two runs of the same search


@pytest.fixture(scope="module")
def problem() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    x = torch.randn(400, 12)
    return model, (x, model(x).argmax(1) ^ (torch.arange(400) % 7 == 0).long())


def _search(problem, out: Path | None) -> bitscout.SearchResult:
    model, data = problem
    return bitscout.search(model, data, SPACE, strategy="tpe", trials=TRIALS, seed=3, out=out,
                           objective={"accuracy": 1.0, "average_bitwidth": -0.01})  # fmt: skip


def _comparable(trial: optuna.trial.FrozenTrial) -> tuple:
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in UNSTABLE}
    return trial.number, trial.state, trial.params, trial.values, attrs, trial.system_attrs


def _reader(path: Path) -> optuna.Study:
    """The journal as another process reads it: Optuna's own storage, nothing of bitscout's."""
    return optuna.load_study(study_name="bitscout", storage=JournalStorage(
        JournalFileBackend(str(path))))  # fmt: skip


def test_a_journal_search_records_what_an_in_memory_search_records(problem, tmp_path):
    memory = _search(problem, None).study
    _search(problem, tmp_path / "run")
    on_disk = _reader(tmp_path / "run" / "study.journal")
    assert memory is not None and len(memory.trials) == TRIALS
    assert [_comparable(t) for t in on_disk.trials] == [_comparable(t) for t in memory.trials]
    assert all(t.state == TrialState.COMPLETE for t in on_disk.trials)
    assert {t.user_attrs[WORKER] for t in on_disk.trials} == {liveness.worker_id()}


def test_a_trial_takes_three_appends_its_result_one(problem, tmp_path, monkeypatch):
    """Created RUNNING with its worker (its number taken), its config before it is evaluated
    (other workers see what runs; a crash runs it again), then every attribute, its values
    and its state in one append."""
    appends: list[list[dict]] = []
    append = WriteBehindFile.append_logs

    def counted(self: WriteBehindFile, logs: list[dict]) -> None:
        appends.append(logs)
        append(self, logs)

    monkeypatch.setattr(WriteBehindFile, "append_logs", counted)
    _search(problem, tmp_path / "run")
    creates = [a for a in appends if a[0]["op_code"] == JournalOperation.CREATE_TRIAL]
    search_study = creates[-1][0]["study_id"]  # the companion fingerprint study came first
    mine = [a for a in creates if a[0]["study_id"] == search_study]
    assert len(mine) == TRIALS
    for created in mine:
        assert len(created) == 1 and created[0]["state"] == TrialState.RUNNING
        assert created[0]["user_attrs"] == {WORKER: liveness.worker_id()}
    by_trial: dict[int, list[list[dict]]] = {}
    for ops in appends:
        if "trial_id" in ops[0]:
            assert len({op["trial_id"] for op in ops}) == 1  # one trial per append
            by_trial.setdefault(ops[0]["trial_id"], []).append(ops)
    assert len(by_trial) == TRIALS
    for config, result in by_trial.values():  # exactly two appends after its creation
        assert [op["op_code"] for op in config].count(JournalOperation.SET_TRIAL_PARAM) == 6
        codes = [op["op_code"] for op in result]
        assert JournalOperation.SET_TRIAL_PARAM not in codes
        assert codes[-1] == JournalOperation.SET_TRIAL_STATE_VALUES and result[-1]["values"]
        keys = {key for op in result for key in op.get("user_attr", {})}
        assert {"metrics", "accuracy", "average_bitwidth", "feasible", "duration_s"} <= keys


def _deferred(path: Path) -> optuna.Study:
    storage = DeferredWrites(JournalStorage(WriteBehindFile(str(path))))
    sampler = optuna.samplers.RandomSampler(seed=0)
    return optuna.create_study(storage=storage, study_name="bitscout", sampler=sampler,
                               load_if_exists=True)  # fmt: skip


def _reported(trial: optuna.Trial) -> None:
    trial.suggest_categorical("w", [2, 4, 8])
    trial.set_user_attr("accuracy", 0.75)
    trial.set_user_attr("metrics", {"accuracy": 0.75})


def test_other_workers_see_a_running_trial_at_once_and_its_result_whole(tmp_path):
    path = tmp_path / "study.journal"
    study = _deferred(path)
    trial = study.ask()
    seen = _reader(path).trials
    assert [(t.state, t.params, t.user_attrs) for t in seen] == [
        (TrialState.RUNNING, {}, {WORKER: liveness.worker_id()})
    ]
    _reported(trial)
    assert trial.params == {"w": trial.params["w"]} and trial.user_attrs["accuracy"] == 0.75
    assert _reader(path).trials[0].user_attrs == {WORKER: liveness.worker_id()}  # held
    trial.set_user_attr(HEARTBEAT, 123.0)  # liveness is judged by it: sent at once
    assert _reader(path).trials[0].user_attrs[HEARTBEAT] == 123.0
    study.tell(trial, 0.5)
    (done,) = _reader(path).trials
    assert done.state == TrialState.COMPLETE and done.values == [0.5]
    assert done.params == trial.params and done.user_attrs["metrics"] == {"accuracy": 0.75}
    other = _deferred(path)  # a second worker: numbers stay atomic, results are shared
    second = other.ask()
    assert second.number == 1 and other.trials[0].values == [0.5]
    other.tell(second, 0.25)
    assert [t.values for t in study.trials] == [[0.5], [0.25]]


def test_a_trial_ended_by_another_worker_meanwhile_is_refused_whole(tmp_path):
    path = tmp_path / "study.journal"
    study = _deferred(path)
    trial = study.ask()
    _reported(trial)
    JournalStorage(JournalFileBackend(str(path))).set_trial_state_values(
        trial._trial_id, TrialState.FAIL
    )  # another worker judged it interrupted
    with pytest.raises(UpdateFinishedTrialError):
        study.tell(trial, 0.5)
    for seen in (study.trials, _reader(path).trials):  # this worker and any other agree
        assert [(t.state, t.params, t.user_attrs) for t in seen] == [
            (TrialState.FAIL, {}, {WORKER: liveness.worker_id()})
        ]
    later = study.ask()  # the refused records are behind it: the store reads on
    study.tell(later, 1.0)
    assert [t.state for t in _reader(path).trials] == [TrialState.FAIL, TrialState.COMPLETE]


def test_a_result_torn_by_a_power_loss_is_not_counted_and_runs_again(tmp_path, monkeypatch):
    path = tmp_path / "study.journal"
    study = _deferred(path)
    for value in (0.1, 0.2):
        study.optimize(lambda t, v=value: (_reported(t), v)[1], n_trials=1)
    last = study.ask()
    _reported(last)
    size = path.stat().st_size
    study.tell(last, 0.3)
    with path.open("r+b") as f:  # the last append, cut halfway
        f.truncate(size + (path.stat().st_size - size) // 2)
    assert repair_journal(path) is not None
    store = OptunaStore(_reader(path), space=None)  # type: ignore[arg-type]
    assert [t.number for t in store.ended()] == [0, 1]
    (running,) = store.trials(("running",))
    assert running.number == 2 and running.values is None
    monkeypatch.setattr(liveness, "_TOKEN", "restarted")  # as a new process: the old one is dead
    assert [t.number for t in store.fail_stale()] == [2]  # its config is evaluated again
    assert [t.number for t in store.ended()] == [0, 1]


def test_the_fsync_is_held_back_and_then_done(tmp_path, monkeypatch):
    synced: list[int] = []
    monkeypatch.setattr(deferred.os, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setattr(deferred, "SYNC_S", 0.05)
    backend = WriteBehindFile(str(tmp_path / "j"))
    backend.append_logs([{"op_code": 0}])
    backend.append_logs([{"op_code": 1}])
    assert (tmp_path / "j").read_text() == '{"op_code":0}\n{"op_code":1}\n'  # in the file
    deadline = time.monotonic() + 10
    while not synced and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(synced) == 1  # one fsync for both appends
    backend.sync()
    assert len(synced) == 1  # nothing new to sync


def test_a_failed_fsync_is_raised_by_the_next_write_naming_the_journal(tmp_path, monkeypatch):
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(deferred.os, "fsync", broken)
    backend = WriteBehindFile(str(tmp_path / "j"))
    backend.append_logs([{"op_code": 0}])
    backend._sync_quietly()  # as the timer does
    with pytest.raises(OSError) as err:
        backend.append_logs([{"op_code": 1}])
    assert err.value.errno == errno.EIO and err.value.filename == str(tmp_path / "j")
    backend.append_logs([{"op_code": 1}])  # raised once: the next write goes on
    assert (tmp_path / "j").read_text().count("\n") == 2


def test_a_worker_reads_its_own_append_back_from_memory_and_others_from_the_file(
    tmp_path, monkeypatch
):
    """Alone on the journal, a worker's writes read themselves back without opening the file;
    with another worker appending between, it reads the file, and every view agrees."""
    path = tmp_path / "study.journal"
    first = _deferred(path)
    opened: list[int] = []
    read = JournalFileBackend.read_logs

    def spied(self: JournalFileBackend, log_number_from: int):
        opened.append(log_number_from)
        return read(self, log_number_from)

    monkeypatch.setattr(JournalFileBackend, "read_logs", spied)
    # a reason beyond ASCII: the records' offsets are counted in bytes
    first.optimize(lambda t: (_reported(t), t.set_user_attr("reason", "2 µs ≤ 1 ms"), 0.5)[2],
                   n_trials=2)  # fmt: skip
    assert opened == []  # every write of this worker read back from memory
    second = _deferred(path)
    mine, theirs = first.ask(), second.ask()
    _reported(mine)
    _reported(theirs)
    second.tell(theirs, 0.25)
    first.tell(mine, 0.75)  # its read-back finds the other worker's records first
    assert opened
    views = [first.trials, second.trials, _reader(path).trials]
    expected = [(0, [0.5]), (1, [0.5]), (2, [0.75]), (3, [0.25])]
    for trials in views:
        assert [(t.number, t.values) for t in trials] == expected
        assert [_comparable(t) for t in trials] == [_comparable(t) for t in views[-1]]
        assert trials[1].user_attrs["reason"] == "2 µs ≤ 1 ms"


@pytest.mark.parametrize(("show", "expected"), [(False, "quiet"), (True, "normal")])
def test_a_search_that_shows_nothing_draws_no_progress(problem, monkeypatch, show, expected):
    used: list[str] = []

    class Spy(run.Reporter):
        def __init__(self, console, total, objective, verbosity="normal") -> None:
            used.append(verbosity)
            super().__init__(console, total, objective, verbosity)

    monkeypatch.setattr(run, "Reporter", Spy)
    model, data = problem
    bitscout.search(model, data, SPACE, strategy="random", trials=2, show=show)
    assert used == [expected]
