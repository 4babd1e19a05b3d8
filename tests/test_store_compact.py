"""A journal's trials held once in memory: what a compacted journal reads must equal what
Optuna's own JournalStorage reads from the same file, while trials share their names and
distributions, and the journal notes only the offset it reads on from."""

from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bitscout.study.store.compact import CompactJournal
from bitscout.study.store.deferred import DeferredWrites, WriteBehindFile

DISTS = {
    "a/weight_width": CategoricalDistribution([2, 4, 8]),
    "b/weight_width": CategoricalDistribution(["NA", 4, 8]),
    "lr": FloatDistribution(1e-3, 1.0, log=True),
}


def _metrics(n: int) -> dict[str, float]:
    return {"accuracy": 0.5 + n / 100, "average_bitwidth": 4.0 + n}


def _write(study: optuna.Study, n: int) -> None:
    """`n` trials as bitscout records them: each metric in `metrics` and on its own; some
    asked and told (one record at a time), some added whole (one record each)."""
    for i in range(n):
        metrics = _metrics(i)
        attrs = {"metrics": metrics, **metrics, "worker": "host:1:abc", "cached": False}
        if i % 2:
            trial = study.ask(DISTS)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            study.tell(trial, metrics["accuracy"])
        else:
            params = {"a/weight_width": 4, "b/weight_width": "NA", "lr": 0.01 * (i + 1)}
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions=DISTS, user_attrs=attrs, value=0.1))  # fmt: skip


def _state(trial: optuna.trial.FrozenTrial) -> tuple:
    return (trial.number, trial.state, trial.params, trial.distributions, trial.user_attrs,
            trial.system_attrs, trial.values, trial.datetime_start, trial.datetime_complete)  # fmt: skip


def _open(path) -> optuna.Study:
    storage = DeferredWrites(CompactJournal(WriteBehindFile(str(path))))
    return optuna.create_study(storage=storage, study_name="s", load_if_exists=True,
                               sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip


def test_a_compacted_journal_reads_what_optunas_own_reads(tmp_path):
    path = tmp_path / "study.journal"
    writer = _open(path)
    _write(writer, 12)
    own = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    expected = [_state(t) for t in own.trials]
    assert len(expected) == 12 and all(t[1] == TrialState.COMPLETE for t in expected)
    for study in (writer, _open(path)):  # the writer, and a worker that replays the file
        trials = study.get_trials(deepcopy=False)
        assert [_state(t) for t in trials] == expected
        firsts = trials[0], trials[2]
        assert firsts[0].distributions is firsts[1].distributions  # one table for both
        names = [next(k for k in t.user_attrs if k == "accuracy") for t in firsts]
        assert names[0] is names[1]
        for t in trials:  # a metric stored twice is held once
            assert t.user_attrs["accuracy"] is t.user_attrs["metrics"]["accuracy"]
    assert [t.values for t in writer.trials] == [t.values for t in own.trials]


def test_choices_that_compare_equal_keep_their_own_distributions(tmp_path):
    study = _open(tmp_path / "study.journal")
    ones = {"x": CategoricalDistribution([1, 0])}
    bools = {"x": CategoricalDistribution([True, False])}
    for dists, value in ((ones, 1), (bools, True), (ones, 0)):
        study.add_trial(optuna.trial.create_trial(params={"x": value}, distributions=dists,
                                                  value=0.0))  # fmt: skip
    trials = _open(tmp_path / "study.journal").trials
    assert [t.params["x"] for t in trials] == [1, True, 0]
    assert [type(t.params["x"]) for t in trials] == [int, bool, int]


def test_the_journal_keeps_only_the_offset_it_reads_on_from(tmp_path):
    path = tmp_path / "study.journal"
    study, other = _open(path), _open(path)
    for _ in range(3):  # two workers interleaved: each reads the other's records from the file
        _write(study, 4)
        _write(other, 4)
    for s in (study, other):
        backend = s._storage.inner._backend
        assert len(s.trials) == 24
        assert len(backend._log_number_offset) <= 20  # one trial's records at most, not all
        lines = path.read_bytes().count(b"\n")
        assert max(backend._log_number_offset) == lines
        assert backend._log_number_offset[lines] == path.stat().st_size
