"""What the reliability tests (tests/test_reliability*.py, test_chunked.py,
test_large_spaces.py) share: the seed's 48-candidate brute-force space as a config, the
module-scoped fixture that trains its float checkpoint, searches run in subprocesses
(`worker_driver.py`) that can slow their evaluations down or SIGKILL themselves at a chosen
point, and readers of the study and trials.csv they leave.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import tomli_w
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bitscout.cli import main

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
