"""Where the store takes a shortcut, it gives what the long way gives: `trials_from` the
trials `trials` lists from that number on (in memory, in a journal, with another worker's
trials among them), and a recorded trial the trial Optuna's own `create_trial` makes."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from torch import nn

from bitscout.objective import MetricSpec, Objective
from bitscout.quant.space import parse_space
from bitscout.results.trials import Result, quiet_optuna
from bitscout.study.store.base import CLAIM, WORKER, result_attrs
from bitscout.study.store.optuna_store import OptunaStore
from bitscout.study.store.storage import open_store

SPACE = {"setup": {"by": "name"},
         "seed": {"default": {"config": {"name": ["integer"], "data_in_width": [4, 8],
                                         "weight_width": [2, 4, 8], "bias_width": [8]}}}}  # fmt: skip
RESULTS = [
    Result({"accuracy": 0.5}, [0.5], {}, True, False, 0.1),
    Result({}, [], {}, False, False, 0.2, failure="boom"),
    Result({"accuracy": 0.7}, [0.7], {"bops": 3.0, "size": -1.0}, False, False, 0.3,
           reason="too big"),
    Result({"accuracy": 0.2}, [0.2], {}, True, False, 0.4, pruned=True),
]  # fmt: skip


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _journal_store(tmp_path: Path) -> tuple[OptunaStore, optuna.Study]:
    path = str(tmp_path / "study.journal")
    objective = Objective((MetricSpec("accuracy", 1.0, "maximize"),), True, "maximize", ())
    with quiet_optuna():
        store = open_store(path, "s", objective, {"k": 1}, parse_space(SPACE, _model()))
        other = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
    return store, other


def _memory_store() -> OptunaStore:
    with quiet_optuna():
        study = optuna.create_study(directions=["maximize"])
    return OptunaStore(study, parse_space(SPACE, _model()))


@pytest.mark.parametrize("kind", ["memory", "journal"])
def test_trials_from_is_trials_from_that_number_on(tmp_path: Path, kind: str) -> None:
    other = None
    if kind == "memory":
        store = _memory_store()
    else:
        store, other = _journal_store(tmp_path)
    space = store.space
    for i in range(6):
        if i == 3 and other is not None:  # another worker's trial, not yet read by `store`
            other.add_trial(optuna.trial.create_trial(value=0.9))
        if i == 4:
            store.start(space.config(i), {})  # left running
        else:
            store.record(space.config(i), RESULTS[i % len(RESULTS)])
    every = store.trials()
    for number in range(len(every) + 2):
        expected = [(t.number, t.state, t.params) for t in every if t.number >= number]
        assert [(t.number, t.state, t.params) for t in store.trials_from(number)] == expected


def test_a_recorded_trial_is_the_trial_optunas_create_trial_makes() -> None:
    store = _memory_store()
    space = store.space
    for i, result in enumerate(RESULTS):
        config = space.config(i)
        number = store.record(config, result, {CLAIM: 7})
        got = store.study.trials[number]
        state = TrialState.COMPLETE
        if result.failure is not None:
            state = TrialState.FAIL
        elif result.pruned:
            state = TrialState.PRUNED
        dists = {d.name: optuna.distributions.CategoricalDistribution(d.choices)
                 for d in space.dimensions if d.name in config}  # fmt: skip
        want = optuna.trial.create_trial(
            params=dict(config),
            distributions=dists,
            values=result.values if state == TrialState.COMPLETE else None,
            user_attrs={WORKER: got.user_attrs[WORKER], CLAIM: 7, **result_attrs(result)},
            constraints=result.violations or None if result.failure is None else None,
            state=state,
        )
        for name in ("state", "values", "params", "distributions", "user_attrs",
                     "system_attrs", "intermediate_values", "constraints"):  # fmt: skip
            assert getattr(got, name) == getattr(want, name), (i, name)
        assert got.datetime_complete is not None and got.datetime_start is not None
