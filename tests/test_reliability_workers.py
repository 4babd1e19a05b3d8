"""Many workers share a study: three worker processes on a journal file or PostgreSQL,
`n_jobs` worker processes (and SQLite refused), TPE's constant liar spreading them out, and
n_trials met exactly with several workers.

Searches run in subprocesses (`worker_driver.py`) on the seed's 48-candidate brute-force space
(tests/reliability_support.py). Split from tests/test_reliability.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w
from optuna.trial import TrialState
from reliability_support import (
    assert_csv_agrees,
    assets,  # noqa: F401 - the fixture
    complete,
    config_doc,
    load,
    params_key,
    run,
    worker,
)

from bitscout.cli import main

# --- many workers -------------------------------------------------------------------------


def _three_workers(assets: dict[str, Path], tmp: Path, storage: str, study: str) -> None:  # noqa: F811
    procs = [
        worker(assets, tmp / f"w{i}", "--storage", storage, "--study", study,
               env={"DRIVER_SLOW_S": "0.03"})
        for i in range(3)
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    shared = load(storage, study)
    done = complete(shared)
    assert len(done) == 48 == len({params_key(t) for t in done})  # nobody evaluated twice
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) >= 2, "the work was shared"
    single = json.loads((assets["root"] / "single" / "summary.json").read_text())
    for i in range(3):
        summary = json.loads((tmp / f"w{i}" / "summary.json").read_text())
        assert summary["best"]["config"] == single["best"]["config"]
        assert summary["unique_configs"] == 48


@pytest.fixture(scope="module")
def single(assets: dict[str, Path]) -> None:  # noqa: F811
    rc, err = run(assets, assets["root"] / "single")
    assert rc == 0, err


def test_three_workers_share_a_journal_file(assets, single, tmp_path):  # noqa: F811
    _three_workers(assets, tmp_path, str(tmp_path / "shared.journal"), "shared")


def test_three_workers_share_postgresql(assets, single, tmp_path, postgres_url, study_name):  # noqa: F811
    _three_workers(assets, tmp_path, postgres_url, study_name)
    password = postgres_url.split("//")[1].split("@")[0].split(":")[1]
    for i in range(3):
        assert password not in (tmp_path / f"w{i}" / "summary.json").read_text()


def test_n_jobs_runs_extra_worker_processes_on_the_study(assets, tmp_path):  # noqa: F811
    """n_jobs = 2: the parent (slowed down here) and one extra process share the chunks."""
    doc = config_doc()
    doc["search"]["strategy"]["setup"]["n_jobs"] = 2
    assets = {**assets, "jobs": tmp_path / "jobs.toml"}
    assets["jobs"].write_text(tomli_w.dumps(doc))
    out = tmp_path / "jobs"
    rc, err = run(assets, out, env={"DRIVER_SLOW_S": "0.1"}, config="jobs")
    assert rc == 0, err
    study = load(out / "study.journal")
    done = complete(study)
    assert len(done) == 48 == len({params_key(t) for t in done})
    pids = {t.user_attrs["worker"].split(":")[1] for t in done}
    assert len(pids) == 2, "the extra process evaluated candidates too"
    assert_csv_agrees(out, study)


def test_n_jobs_refuses_sqlite(assets, tmp_path, capsys):  # noqa: F811
    doc = config_doc()
    doc["search"]["strategy"]["setup"]["n_jobs"] = 2
    cfg = tmp_path / "jobs.toml"
    cfg.write_text(tomli_w.dumps(doc))
    args = ["--load", str(assets["ckpt"]), "--storage", f"sqlite:///{tmp_path / 's.db'}"]
    assert main(["search", str(cfg), "--out", str(tmp_path / "o"), *args]) == 2
    assert "n_jobs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_tpe_uses_the_constant_liar_so_workers_spread_out():
    from bitscout.quant.space import parse_space
    from bitscout.study.strategies.optuna_samplers import build_sampler
    from bitscout.zoo.models import build_model

    space = parse_space(config_doc()["search"]["search_space"], build_model("jsc-tiny"))
    assert build_sampler("tpe", 0, space)._constant_liar is True


# --- n_trials with several workers --------------------------------------------------------


@pytest.mark.parametrize(("strategy", "n_trials"), [("bruteforce", 30), ("optuna", 20)])
def test_three_workers_stop_at_n_trials_exactly(assets, tmp_path, strategy, n_trials):  # noqa: F811
    """Chunks of 8 over 48 candidates: the fourth claimed chunk must be cut to 6 candidates,
    whichever worker claims it; TPE workers must not overshoot by their trials in flight."""
    doc = config_doc(strategy, n_trials)
    assets = {**assets, "n": tmp_path / "n.toml"}
    assets["n"].write_text(tomli_w.dumps(doc))
    storage = str(tmp_path / "shared.journal")
    procs = [
        worker(assets, tmp_path / f"w{i}", "--storage", storage, "--seed", str(i),
               env={"DRIVER_SLOW_S": "0.02"}, config="n")
        for i in range(3)
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    study = load(storage)
    ended = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    assert len(ended) == n_trials
    assert len({params_key(t) for t in ended}) == len(ended) or strategy == "optuna"
    own = [json.loads((tmp_path / f"w{i}" / "summary.json").read_text()) for i in range(3)]
    assert sum(s["trials_run"] for s in own) == n_trials  # each counts only its own
    for s in own:
        assert s["complete"] == n_trials
