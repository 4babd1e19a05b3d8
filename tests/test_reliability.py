"""Interrupted searches resume and failing candidates are recorded.

Searches run in subprocesses (`worker_driver.py`) that can slow their evaluations down or
SIGKILL themselves at a chosen point, on the seed's 48-candidate brute-force space
(tests/reliability_support.py). Many workers sharing a study are in
tests/test_reliability_workers.py.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from optuna.trial import TrialState
from reliability_support import (
    assert_csv_agrees,
    assets,  # noqa: F401 - the fixture
    complete,
    csv_rows,
    finished_so_far,
    load,
    params_key,
    run,
    worker,
)

from bitscout.cli import main
from bitscout.evaluate.evaluator import Evaluator

# --- interruption -------------------------------------------------------------------------


def test_sigkill_at_several_points_then_resume(assets, tmp_path):  # noqa: F811
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


def test_sigkill_of_tpe_fails_the_running_trial_and_retries_its_config(assets, tmp_path):  # noqa: F811
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


def test_sigint_stops_cleanly_and_resumes(assets, tmp_path):  # noqa: F811
    out = tmp_path / "int"
    proc = worker(assets, out, env={"DRIVER_SLOW_S": "0.1"})
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
    assets,  # noqa: F811
    tmp_path,
    monkeypatch,
    step,
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
    assets,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
    strategy,
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


def test_a_search_where_every_candidate_fails_exits_1(assets, tmp_path, monkeypatch, capsys):  # noqa: F811
    _faulty(monkeypatch, dict.fromkeys((2, 4, 8, 16), "raise"))
    out = tmp_path / "allfail"
    rc = main(["search", str(assets["cfg"]), "--out", str(out), "--load", str(assets["ckpt"])])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("bitscout: error: all 48 evaluated candidates failed")
    assert "RuntimeError: boom in the quantizer" in err[0]
    assert len(csv_rows(out)) == 48
