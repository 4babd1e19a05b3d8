"""Smoke tests of PostgreSQL as the shared Optuna store (Optuna's RDB storage, psycopg 3).

They need a server: `.ci/run` starts one and sets BITSCOUT_TEST_POSTGRES; without it they skip
(or fail, under BITSCOUT_REQUIRE_POSTGRES=1). See tests/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import optuna
import pytest
from sqlalchemy.engine import make_url

WORKER = textwrap.dedent(
    """
    import os, sys, time
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker, n = sys.argv[1], int(sys.argv[2])
    study = optuna.load_study(study_name=sys.argv[3], storage=os.environ["SMOKE_STORAGE"])

    def objective(trial):
        trial.set_user_attr("worker", worker)
        time.sleep(0.02)  # keep both workers' trials interleaved
        return trial.suggest_float("x", -1.0, 1.0) ** 2

    study.optimize(objective, n_trials=n)
    """
)


def test_create_study_and_add_trial(postgres_url: str, study_name: str) -> None:
    study = optuna.create_study(storage=postgres_url, study_name=study_name)
    study.optimize(lambda t: t.suggest_int("bits", 2, 8) / 8, n_trials=1)
    study.add_trial(
        optuna.trial.create_trial(
            params={"bits": 4},
            distributions={"bits": optuna.distributions.IntDistribution(2, 8)},
            value=0.5,
            user_attrs={"cached": True},
        )
    )

    # Read back through a new storage object: the trials are in the database, not a cache.
    again = optuna.load_study(study_name=study_name, storage=postgres_url)
    trials = again.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.number for t in trials] == [0, 1]
    assert trials[1].params == {"bits": 4}
    assert trials[1].value == 0.5
    assert trials[1].user_attrs == {"cached": True}


def test_plain_postgresql_scheme_uses_psycopg3(postgres_url: str, study_name: str) -> None:
    # The README's `postgresql://user:pass@host/db`: SQLAlchemy 2.1+ maps it to psycopg 3.
    url = make_url(postgres_url)
    if url.drivername != "postgresql+psycopg":
        pytest.skip(f"the test server's URL uses {url.drivername}")
    plain = url.set(drivername="postgresql")
    assert plain.get_dialect().driver == "psycopg"
    study = optuna.create_study(
        storage=plain.render_as_string(hide_password=False), study_name=study_name
    )
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert len(study.trials) == 1


def test_two_processes_share_a_study(postgres_url: str, study_name: str) -> None:
    optuna.create_study(storage=postgres_url, study_name=study_name)
    env = {**os.environ, "SMOKE_STORAGE": postgres_url}  # the password stays out of argv
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, worker, "10", study_name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for worker in ("a", "b")
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out

    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 20
    assert sorted(t.number for t in trials) == list(range(20))
    workers = [t.user_attrs["worker"] for t in trials]
    assert workers.count("a") == workers.count("b") == 10


def test_storage_password_is_masked(postgres_url: str) -> None:
    from bitscout.study.store.storage import mask_password

    password = make_url(postgres_url).password
    if not password:
        pytest.skip("the test server's URL has no password")
    masked = mask_password(postgres_url)
    assert password not in masked
    assert masked.split("@")[-1] == postgres_url.split("@")[-1]
