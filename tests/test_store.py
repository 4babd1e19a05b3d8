"""The Store in front of Optuna: what it records reads back through Optuna's public API, the
results never see Optuna's trials, Optuna's log level is bitscout's only while it searches,
and Optuna's internals are touched by one module only."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from torch import nn

import bitscout
from bitscout.objective import MetricSpec, Objective
from bitscout.quant.space import parse_space
from bitscout.results.trials import TRIAL_COLUMNS, Result, quiet_optuna
from bitscout.study.chunks import token_attrs
from bitscout.study.store.base import (
    CHUNK,
    CLAIM,
    FAILURE,
    HEARTBEAT,
    METRICS,
    QUOTA,
    WORKER,
    TrialFinished,
)
from bitscout.study.store.deferred import WriteBehindFile
from bitscout.study.store.optuna_store import OptunaStore
from bitscout.study.store.storage import open_store

SRC = Path(bitscout.__file__).parent
SPACE = {
    "setup": {"by": "name"},
    "seed": {"default": {"config": {"name": ["integer"], "data_in_width": [4, 8],
                                    "weight_width": [2, 4, 8], "bias_width": [8]}}},
}  # fmt: skip


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)


@pytest.fixture
def store() -> OptunaStore:
    space = parse_space(SPACE, _model())
    with quiet_optuna():
        study = optuna.create_study(directions=["maximize"])
    return OptunaStore(study, space)


def _ok(value: float, violations: dict[str, float] | None = None) -> Result:
    return Result({"accuracy": value}, [value], violations or {}, not violations, False, 0.5,
                  reason="too big" if violations else "")  # fmt: skip


def _failed(why: str) -> Result:
    return Result({}, [], {}, False, False, 0.1, failure=why)


# --- what the store writes, read back by Optuna's public API -------------------------------


def test_record_adds_a_finished_trial_in_one_write_and_returns_its_number(store):
    configs = [store.space.config(i) for i in range(3)]
    assert [store.record(c, r) for c, r in zip(configs, [_ok(0.5), _failed("boom"),
            _ok(0.7, {"model_size": 3.0})], strict=True)] == [0, 1, 2]  # fmt: skip
    trials = store.study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE,
                                         optuna.trial.TrialState.FAIL,
                                         optuna.trial.TrialState.COMPLETE]  # fmt: skip
    assert trials[0].params == configs[0] and trials[0].value == 0.5
    assert trials[0].user_attrs[METRICS] == {"accuracy": 0.5}
    assert trials[0].user_attrs["accuracy"] == 0.5  # for optuna-dashboard's plots
    assert trials[1].user_attrs[FAILURE] == "error" and trials[1].user_attrs["reason"] == "boom"
    assert trials[2].constraints == {"model_size": 3.0}  # what samplers read
    assert trials[0].user_attrs[WORKER].split(":")[1] == str(os.getpid())


def test_trials_recorded_together_are_one_append_and_read_back_in_order(tmp_path, monkeypatch):
    """A brute-force batch: one append, after another writer's trial that this store has not
    read yet; each number is its own config's, as a fresh reader (Optuna's own) sees them."""
    path = str(tmp_path / "study.journal")
    objective = Objective((MetricSpec("accuracy", 1.0, "maximize"),), True, "maximize", ())
    with quiet_optuna():
        store = open_store(path, "s", objective, {"k": 1}, parse_space(SPACE, _model()))
        other = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
    store.record(store.space.config(0), _ok(0.1))
    other.add_trial(optuna.trial.create_trial(value=0.9))  # not yet read by `store`
    appends: list[int] = []
    original = WriteBehindFile.append_logs
    monkeypatch.setattr(
        WriteBehindFile,
        "append_logs",
        lambda self, logs: appends.append(len(logs)) or original(self, logs),
    )
    configs = [store.space.config(i) for i in (3, 1, 4, 2)]
    results = [_ok(0.4), _failed("boom"), _ok(0.6), _ok(0.5, {"bops": 2.0})]
    numbers = store.record_many(list(zip(configs, results, strict=True)), {CLAIM: 7})
    assert appends == [4] and numbers == [2, 3, 4, 5]
    with quiet_optuna():
        fresh = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
    trials = fresh.get_trials()
    assert [t.params for t in trials[2:]] == configs
    assert [t.user_attrs[CLAIM] for t in trials[2:]] == [7] * 4
    assert [t.value for t in trials[2:]] == [0.4, None, 0.6, 0.5]
    assert trials[3].state == optuna.trial.TrialState.FAIL and trials[1].value == 0.9
    assert trials[5].constraints == {"bops": 2.0}


def test_a_started_trial_is_finished_with_optunas_own_constraints(store):
    config = store.space.config(4)
    ref = store.claim(config, chunk=0, quota=5)
    (running,) = store.trials(("running",))
    assert running.ref == ref and running.params == config
    assert running.user_attrs[CHUNK] == 0 and running.user_attrs[QUOTA] == 5
    store.set_attr(ref, QUOTA, 2)
    store.finish(ref, _ok(0.25, {"bops": 1.5}), {"extra": 1})
    frozen = store.study.trials[store.number_of(ref)]
    # the same system attrs Optuna's public `Trial.set_constraint` writes, read back publicly
    assert frozen.constraints == {"bops": 1.5}
    assert frozen.values == [0.25] and frozen.user_attrs[QUOTA] == 2
    assert frozen.user_attrs["extra"] == 1
    with pytest.raises(TrialFinished):
        store.set_attr(ref, QUOTA, 1)
    with pytest.raises(TrialFinished):
        store.abandon(ref, "pruned", "too late")


def test_abandoned_and_stale_trials(store):
    pruned = store.start(store.space.config(0), {})
    store.abandon(pruned, "pruned", "chunk 0 was claimed first by trial 9")
    dead = store.start(store.space.config(1), {})
    store.set_attr(dead, WORKER, f"{os.uname().nodename}:999999999:gone")  # no such process
    store.start(store.space.config(2), {})  # this worker's: alive
    (failed,) = store.fail_stale()
    assert failed.ref == dead
    assert store.fail_stale() == []  # failed once, by one caller
    states = [t.state for t in store.trials()]
    assert states == ["pruned", "failed", "running"]
    assert store.trial(1).user_attrs["reason"].startswith("interrupted: worker")
    assert store.ended_count() == 0  # neither an interruption nor a lost claim ran to an end


def test_counts_the_frame_and_one_row(store):
    import pandas as pd

    store.record(store.space.config(0), _ok(0.5))
    store.record(store.space.config(1), _failed("boom"))
    store.record(store.space.config(2), _ok(0.6, {"bops": 2.0}))
    store.start(store.space.config(3), {})
    assert [t.number for t in store.ended()] == [0, 1, 2]
    assert [t.number for t in store.done()] == [0, 2]
    assert store.ended_count() == 3
    frame = store.frame()
    assert tuple(frame.columns) == TRIAL_COLUMNS
    assert frame["state"].tolist() == ["complete", "failed", "infeasible", "running"]
    assert frame["values"].tolist() == [[0.5], None, [0.6], None]
    assert frame["params"].tolist()[1] == store.space.config(1)
    reasons = [None if pd.isna(r) else r for r in frame["reason"]]  # missing: None or NaN
    assert reasons == [None, "boom", "too big", None]
    assert dict(store.trial_row(2)) == frame.to_dict("records")[2]


def test_chunks_are_decoded_for_the_results(store):
    store.set_study_attr("chunked", True)
    results = [_ok(0.1), _failed("nan"), _ok(0.3)]
    for chunk, indices in enumerate(([0, 1, 2], [5, 4, 3])):
        ref = store.start(store.space.config(indices[-1]), {CHUNK: chunk})
        store.finish(ref, results[-1], token_attrs(indices, results, ["accuracy"]))
    store.start(store.space.config(6), {CHUNK: 2})  # running: no rows yet
    assert store.is_chunked()
    chunks = store.chunks()
    assert [c.indices.tolist() for c in chunks] == [[0, 1, 2], [5, 4, 3]]
    np.testing.assert_array_equal(chunks[1].metrics["accuracy"], [0.1, np.nan, 0.3])
    assert chunks[0].failures == {"1": "nan"}
    assert [c.number for c in store.chunks(skip={0})] == [1]
    assert store.ended_count() == 6  # a chunk token stands for its candidates


def _beats(study: optuna.Study) -> float | None:
    return study.get_trials(deepcopy=False)[0].user_attrs.get(HEARTBEAT)


@pytest.mark.parametrize("kind", ["optuna trial", "store token"])
def test_the_heartbeat_stamps_a_live_trial_and_outlives_its_end(store, kind):
    """Optuna's own trials are stamped through the public `Trial.set_user_attr`, tokens
    through the store; a beat after the trial ended is dropped, not raised."""
    from bitscout.study.store.liveness import Heartbeat
    from bitscout.study.strategies.optuna_samplers import _beat

    study = store.study
    if kind == "optuna trial":
        trial = study.ask()
        beat, end = _beat(trial), lambda: study.tell(trial, 1.0)
    else:
        ref = store.start(store.space.config(0), {})
        beat = lambda now: store.set_attr(ref, HEARTBEAT, now)  # noqa: E731
        end = lambda: store.finish(ref, _ok(1.0))  # noqa: E731
    with Heartbeat(interval=0.01) as heartbeat:
        heartbeat.watch(beat)
        deadline = time.monotonic() + 5
        while _beats(study) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _beats(study) is not None
        end()
        time.sleep(0.05)  # beats on the finished trial: TrialFinished, swallowed
        assert heartbeat._thread.is_alive()
    assert not heartbeat._thread.is_alive()


def test_an_interruption_while_a_token_is_finished_leaves_nothing_running(tmp_path, monkeypatch):
    """SIGINT can land while the token's result is being written: it is then recorded as
    interrupted (its chunk runs again on resume), never left RUNNING for a dead worker."""

    def interrupted(self, ref, result, attrs=None):
        self.set_attr(ref, METRICS, result.metrics)  # part of the write happened
        raise KeyboardInterrupt

    monkeypatch.setattr(OptunaStore, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _search(strategy="bruteforce", out=tmp_path / "run")
    journal = JournalStorage(JournalFileBackend(str(tmp_path / "run" / "study.journal")))
    study = optuna.load_study(study_name="bitscout", storage=journal)
    states = optuna.trial.TrialState
    assert not study.get_trials(states=(states.RUNNING,))
    (token,) = study.get_trials(states=(states.FAIL,))
    assert token.user_attrs[FAILURE] == "interrupted" and token.user_attrs[CHUNK] == 0


# --- Optuna's log level ---------------------------------------------------------------------


@pytest.mark.parametrize("level", [optuna.logging.DEBUG, optuna.logging.CRITICAL])
def test_quiet_optuna_restores_the_level_even_after_an_error(level):
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level)
    try:
        with quiet_optuna():
            assert optuna.logging.get_verbosity() == max(level, optuna.logging.ERROR)
        assert optuna.logging.get_verbosity() == level
        with pytest.raises(RuntimeError), quiet_optuna():
            raise RuntimeError("a search that fails")
        assert optuna.logging.get_verbosity() == level
    finally:
        optuna.logging.set_verbosity(before)


def _search(**kwargs: object) -> bitscout.SearchResult:
    return bitscout.search(_model(), _data(), SPACE, objective={"accuracy": 1.0}, seed=0,
                           **kwargs)  # type: ignore[arg-type]  # fmt: skip


def test_a_search_silences_optunas_lines_and_gives_the_users_level_back(capfd):
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # the user's own choice
    try:
        result = _search(strategy="tpe", trials=4)
        assert len(result.trials) == 4
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        err = capfd.readouterr().err
        assert "Trial 0 finished" not in err and "A new study created" not in err
        with pytest.raises(bitscout.ConfigError):  # refused inside the search
            _search(strategy="bruteforce", trials=2, timeout=-1)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(before)


def test_a_failing_search_gives_the_level_back(monkeypatch):
    from bitscout.study.strategies import bruteforce

    def boom(self, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(bruteforce.BruteForce, "run", boom)
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with pytest.raises(KeyboardInterrupt):
            _search(strategy="bruteforce")
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    finally:
        optuna.logging.set_verbosity(before)


def test_importing_the_search_changes_no_optuna_level():
    code = ("import optuna, logging; optuna.logging.set_verbosity(logging.DEBUG); "
            "import bitscout, bitscout.study.run, bitscout.study.store.storage, "
            "bitscout.results.ranking; bitscout.search; "
            "assert optuna.logging.get_verbosity() == logging.DEBUG")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_importances_are_optunas_ped_anova_and_print_nothing(capfd):
    import pandas as pd

    from bitscout.objective import MetricSpec, Objective
    from bitscout.results.ranking import param_importances

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    df = pd.DataFrame({"a": a, "b": b, "objective": a * 10.0 + b * 0.1, "number": range(200)})
    objective = Objective((MetricSpec("accuracy", 1.0, "maximize"),))
    found = param_importances(df, ["a", "b"], objective)
    assert list(found) == ["a", "b"] and found["a"] > found["b"]  # largest first
    assert sum(found.values()) == pytest.approx(1.0)
    assert "A new study created" not in capfd.readouterr().err


# --- where Optuna's internals and the schema live ------------------------------------------

INTERNALS = re.compile(
    r"\._(storage|study_id|trial_id)\b|optuna\.[a-z_.]*\._[a-z]|create_new_trial|"
    r"set_trial_state_values|set_trial_(user|system)_attr|get_all_trials|get_trial_id_from"
)


def test_optuna_internals_live_in_one_module():
    touching = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if INTERNALS.search(path.read_text())
    }
    # deferred.py: the journal's batched writes, which need JournalStorage's own internals
    assert touching == {"study/store/optuna_store.py", "study/store/deferred.py"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_results_never_import_the_search():
    for path in (SRC / "results").glob("*.py"):
        assert not [m for m in _imports(path) if m.startswith("bitscout.study")], path.name


def test_storage_env_is_defined_once():
    from bitscout.cli import parser, search
    from bitscout.study import store

    assert parser.STORAGE_ENV is search.STORAGE_ENV is store.STORAGE_ENV == "BITSCOUT_STORAGE"
    defined = [p for p in SRC.rglob("*.py") if re.search(r"^STORAGE_ENV\s*=", p.read_text(), re.M)]
    assert defined == [SRC / "study" / "store" / "__init__.py"]
