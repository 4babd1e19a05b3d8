"""Interrupted searches resume, failing candidates are recorded, many workers share a study.

Searches run in subprocesses (`worker_driver.py`) that can slow their evaluations down or
SIGKILL themselves at a chosen point, on the seed's 48-candidate brute-force space.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import tomli_w
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bitscout.cli import main
from bitscout.evaluate.evaluator import Evaluator

DRIVER = Path(__file__).with_name("worker_driver.py")
LAYER = {
    "name": ["integer"],
    "data_in_width": [4, 8, 16],
    "data_in_frac_width": ["NA"],
    "weight_width": [2, 4, 8, 16],
    "weight_frac_width": ["NA"],
    "bias_width": [2, 4, 8, 16],
    "bias_frac_width": ["NA"],
}
METRICS = {
    "accuracy": {"scale": 2.0, "direction": "maximize"},
    "average_bitwidth": {"scale": -0.1, "direction": "minimize"},
}


def config_doc(strategy: str = "bruteforce", n_trials: int = 48) -> dict:
    return {
        "model": "jsc-tiny",
        "dataset": "fake",
        "dataset_options": {"num_samples": 1500, "num_features": 16, "num_classes": 5},
        "max_epochs": 2,
        "learning_rate": 1e-2,
        "seed": 3,
        "search": {
            "search_space": {
                "setup": {"by": "name"},
                "seed": {
                    "default": {"config": {"name": ["NA"]}},
                    "seq_blocks_2": {"config": LAYER},
                },
            },
            "strategy": {
                "name": strategy,
                "setup": {"n_trials": n_trials, "sampler": "tpe", "seed": 0},
                "metrics": METRICS,
            },
        },
    }


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability")
    cfg = root / "brute.toml"
    cfg.write_text(tomli_w.dumps(config_doc()))
    tpe = root / "tpe.toml"
    tpe.write_text(tomli_w.dumps(config_doc("optuna", 20)))
    assert main(["train", str(cfg), "--out", str(root / "train")]) == 0
    return {"root": root, "cfg": cfg, "tpe": tpe, "ckpt": root / "train" / "model.pt"}


def worker(
    assets: dict[str, Path], out: Path, *args: str, env: dict[str, str] | None = None,
    config: str = "cfg",
) -> subprocess.Popen:  # fmt: skip
    argv = [sys.executable, str(DRIVER), "search", str(assets[config]), "--out", str(out)]
    argv += ["--load", str(assets["ckpt"]), *args]
    return subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def run(assets: dict[str, Path], out: Path, *args: str, **kw: object) -> tuple[int, str]:
    proc = worker(assets, out, *args, **kw)  # type: ignore[arg-type]
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def load(storage: str | Path, name: str = "bitscout") -> optuna.Study:
    url = str(storage)
    backend = url if "://" in url else JournalStorage(JournalFileBackend(url))
    return optuna.load_study(study_name=name, storage=backend)


def finished_so_far(journal: Path) -> int:
    """Complete trials in a journal a live search is writing: 0 before its study's first
    record (the file exists from the first lock taken on it)."""
    if not journal.exists():
        return 0
    try:
        return len(complete(load(journal)))
    except KeyError:  # optuna: the study is not recorded yet
        return 0


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def params_key(trial: optuna.trial.FrozenTrial) -> tuple:
    return tuple(sorted(trial.params.items()))


def csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / "trials.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def assert_csv_agrees(out: Path, study: optuna.Study) -> None:
    rows = {int(r["number"]): r for r in csv_rows(out)}
    trials = study.get_trials(deepcopy=False)
    assert sorted(rows) == [t.number for t in trials]
    for t in trials:
        state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed"}.get(t.state)
        assert rows[t.number]["state"] in ((state,) if state else ("pruned", "running"))
        assert rows[t.number]["reason"] == t.user_attrs.get("reason", "")


# --- interruption -------------------------------------------------------------------------


def test_sigkill_at_several_points_then_resume(assets, tmp_path):
    out = tmp_path / "run"
    journal = out / "study.journal"
    # A chunk of 8 is a batch of its 7 pending candidates, recorded in one write, then its
    # token's own candidate. (fault, complete trials in the store after it, of which trials.csv
    # may lack those of the write the kill followed at once: the store is the truth)
    kills = [
        ({"DRIVER_KILL_AT": "0"}, 0, 0),  # before the first evaluation finished
        ({"DRIVER_KILL_AFTER": "8"}, 8, 1),  # right after a chunk ended
        ({"DRIVER_KILL_AFTER": "13"}, 23, 7),  # mid-chunk, after its batch: token left RUNNING
        ({"DRIVER_KILL_AFTER": "24"}, 47, 7),  # all but the last candidate done
    ]
    for env, expected, unlisted in kills:
        rc, err = run(assets, out, env=env)
        assert rc == -signal.SIGKILL, err
        study = load(journal)
        assert len(complete(study)) == expected
        assert len({params_key(t) for t in complete(study)}) == expected  # none twice
        rows = [r for r in csv_rows(out) if r["state"] == "complete"] if expected else []
        in_csv = {int(r["number"]) for r in rows}
        assert in_csv <= {t.number for t in complete(study)}
        assert len(in_csv) >= expected - unlisted
    rc, err = run(assets, out)
    assert rc == 0, err
    study = load(journal)
    assert len(complete(study)) == 48
    assert len({params_key(t) for t in complete(study)}) == 48
    interrupted = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert interrupted, "the killed runs' running tokens are recorded as failed"
    for t in interrupted:
        assert t.user_attrs["failure"] == "interrupted"
        assert "stopped mid-trial" in t.user_attrs["reason"]
        assert params_key(t) in {params_key(c) for c in complete(study)}  # evaluated again
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert_csv_agrees(out, study)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unique_configs"] == 48 and summary["failed"] == len(interrupted)


def test_sigkill_of_tpe_fails_the_running_trial_and_retries_its_config(assets, tmp_path):
    out = tmp_path / "tpe"
    rc, _ = run(assets, out, env={"DRIVER_KILL_AT": "7"}, config="tpe")
    assert rc == -signal.SIGKILL
    study = load(out / "study.journal")
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert len(running) == 1 and len(complete(study)) == 7
    rc, err = run(assets, out, config="tpe")
    assert rc == 0, err
    study = load(out / "study.journal")
    failed = study.trials[running[0].number]
    assert failed.state == TrialState.FAIL and failed.user_attrs["failure"] == "interrupted"
    retry = [t for t in complete(study) if t.user_attrs.get("retry_of") == failed.number]
    assert len(retry) == 1 and retry[0].params == failed.params
    assert len(complete(study)) == 20
    assert_csv_agrees(out, study)


def test_sigint_stops_cleanly_and_resumes(assets, tmp_path):
    out = tmp_path / "int"
    proc = worker(assets, out, env={"DRIVER_SLOW_S": "0.05"})
    journal = out / "study.journal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the search has finished a few trials
        if finished_so_far(journal) >= 5:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "bitscout: interrupted; finished trials are kept in the store, "
        "run the same command again to resume"
    ]
    study = load(journal)
    done = len(complete(study))
    assert 5 <= done < 48
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert_csv_agrees(out, study)  # the outputs were written on the way out
    rc, err = run(assets, out)
    assert rc == 0, err
    study = load(journal)
    assert len(complete(study)) == 48 == len({params_key(t) for t in complete(study)})


@pytest.mark.parametrize("step", ["_run_chunk", "_settle"])
def test_an_interrupt_between_a_strategys_steps_leaves_no_trial_running(
    assets, tmp_path, monkeypatch, step
):
    """Ctrl-C after a chunk's token is written and before the code that ends it on an
    interrupt is entered (the window CI once hit): the token is failed on the way out."""
    import bitscout.study.strategies.bruteforce as brute

    calls = {"n": 0}
    real = getattr(brute, step)

    def late(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # two chunks run as usual, the third is claimed and then stopped
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(brute, step, late)
    out = tmp_path / "window"
    argv = ["search", str(assets["cfg"]), "--out", str(out), "--load", str(assets["ckpt"])]
    assert main(argv) == 130
    study = load(out / "study.journal")
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stopped = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL]
    assert len(stopped) == 1 and stopped[0].user_attrs["failure"] == "interrupted"
    assert 0 < len(complete(study)) < 48
    monkeypatch.setattr(brute, step, real)
    assert main(argv) == 0
    study = load(out / "study.journal")
    assert len(complete(study)) == 48
    assert len({params_key(t) for t in complete(study)}) == 48


# --- failing candidates -------------------------------------------------------------------


def _faulty(monkeypatch: pytest.MonkeyPatch, bad: dict[int, str]) -> None:
    """Candidates whose weight width is a key of `bad` raise, or give a NaN loss."""
    evaluate_many = Evaluator.evaluate_many

    def faulty(self, configs, **kw):
        faults = [bad.get(c["seq_blocks_2/weight_width"]) for c in configs]
        if "raise" in faults:
            raise RuntimeError("boom in the quantizer")
        results = evaluate_many(self, configs, **kw)
        return [
            ({**m, "loss": float("nan")} if f == "nan" else m, cached)
            for (m, cached), f in zip(results, faults, strict=True)
        ]

    monkeypatch.setattr(Evaluator, "evaluate_many", faulty)


@pytest.mark.parametrize("strategy", ["bruteforce", "optuna"])
def test_failing_candidates_are_recorded_and_the_search_goes_on(
    assets, tmp_path, monkeypatch, capsys, strategy
):
    _faulty(monkeypatch, {2: "raise", 16: "nan"})
    out = tmp_path / strategy
    args = ["--load", str(assets["ckpt"]), "--strategy", strategy]
    assert main(["search", str(assets["cfg"]), "--out", str(out), *args, "--trials", "24"]) == 0
    rows = csv_rows(out)
    failed = [r for r in rows if r["state"] == "failed"]
    assert failed and all(r["seq_blocks_2/weight_width"] in ("2", "16") for r in failed)
    for r in failed:
        expected = (
            "boom in the quantizer" if r["seq_blocks_2/weight_width"] == "2" else "loss = nan"
        )
        assert expected in r["reason"]
    good = [r for r in rows if r["state"] == "complete"]
    assert all(r["seq_blocks_2/weight_width"] in ("4", "8") for r in good)
    assert len(good) + len(failed) == 24  # n_trials counts trials that ended, failed ones too
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == len(failed) and summary["complete"] == len(good)
    if strategy == "bruteforce":  # candidates 0..23 in index order, each once
        configs = {tuple(r[d] for d in r if d.startswith("seq_blocks_2/")) for r in failed}
        assert len(failed) == 12 == len(configs)


def test_a_search_where_every_candidate_fails_exits_1(assets, tmp_path, monkeypatch, capsys):
    _faulty(monkeypatch, dict.fromkeys((2, 4, 8, 16), "raise"))
    out = tmp_path / "allfail"
    rc = main(["search", str(assets["cfg"]), "--out", str(out), "--load", str(assets["ckpt"])])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("bitscout: error: all 48 evaluated candidates failed")
    assert "RuntimeError: boom in the quantizer" in err[0]
    assert len(csv_rows(out)) == 48


# --- many workers -------------------------------------------------------------------------


def _three_workers(assets: dict[str, Path], tmp: Path, storage: str, study: str) -> None:
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
def single(assets: dict[str, Path]) -> None:
    rc, err = run(assets, assets["root"] / "single")
    assert rc == 0, err


def test_three_workers_share_a_journal_file(assets, single, tmp_path):
    _three_workers(assets, tmp_path, str(tmp_path / "shared.journal"), "shared")


def test_three_workers_share_postgresql(assets, single, tmp_path, postgres_url, study_name):
    _three_workers(assets, tmp_path, postgres_url, study_name)
    password = postgres_url.split("//")[1].split("@")[0].split(":")[1]
    for i in range(3):
        assert password not in (tmp_path / f"w{i}" / "summary.json").read_text()


def test_n_jobs_runs_extra_worker_processes_on_the_study(assets, tmp_path):
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


def test_n_jobs_refuses_sqlite(assets, tmp_path, capsys):
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
def test_three_workers_stop_at_n_trials_exactly(assets, tmp_path, strategy, n_trials):
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
