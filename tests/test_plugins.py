"""Plug-in models and datasets in a config (`file.py:callable`, `package.module:callable`), the
model's source, the own-model example (CLI and Python API give the same trials)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from cli_support import error_problems, run_cli, write_config
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

ROOT = Path(__file__).resolve().parents[1]
NET = """
import numpy as np
import torch
from torch import nn

CONSTANT = 3


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(8, width)
        self.norm = nn.LayerNorm(width)
        self.fc2 = nn.Linear(width, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x)))) + 0 * x[:, :3]


def build(width=8):
    return Net(width)


def broken(width=8):
    raise ValueError("no such width")


def not_a_model(width=8):
    return 3


def load(seed=0, rows=300):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return {"train": (x[:200], y[:200]), "val": (x[200:], y[200:])}


def val_only(seed=0):
    return load(seed)["val"]


def mismatched():
    x, y = load()["val"]
    return x, y[:-1]


def no_val():
    return {"train": load()["train"]}


def wide(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 10)).astype(np.float32)  # 10 features: Net takes 8
    y = (x[:, 0] > 0).astype(np.int64)
    return {"train": (x[:200], y[:200]), "val": (x[200:], y[200:])}


def wide_val(seed=0):
    return wide(seed)["val"]


def exits(seed=0):
    import sys

    sys.exit(0)
"""


def _doc(model: str = "net.py:build", dataset: str = "net.py:load", **top) -> dict:
    layer = {"name": ["integer"], "data_in_width": [4, 8], "weight_width": [2, 4, 8],
             "bias_width": [8]}  # fmt: skip
    return {
        "model": model, "dataset": dataset, "max_epochs": 3, "seed": 0,
        "model_options": {"width": 8},
        "search": {
            "search_space": {"setup": {"by": "name"},
                             "seed": {"default": {"config": layer}}},
            "strategy": {"name": "bruteforce", "setup": {"n_trials": 8},
                         "metrics": {"accuracy": {"scale": 1.0}}},
        },
        **top,
    }  # fmt: skip


@pytest.fixture
def plug(tmp_path: Path) -> Path:
    (tmp_path / "net.py").write_text(NET)
    (tmp_path / "syntax.py").write_text("def build(:\n")
    return tmp_path


def _config(plug: Path, name: str = "c.toml", **kw) -> Path:
    doc = _doc(**{k: v for k, v in kw.items() if k in ("model", "dataset")})
    if "model_options" in kw:
        doc["model_options"] = kw["model_options"]
    return write_config(plug / name, doc)


def test_a_plugin_model_and_dataset_train_then_search(plug, capsys):
    out = plug / "run"
    outcome = run_cli(["search", str(_config(plug)), "--out", str(out)], capsys)
    assert outcome.rc == 0, outcome.err
    text = " ".join(outcome.out.split())  # the console wraps long lines
    training = text.find("training net.py:build on net.py:load first")
    trained = text.find("trained net.py:build on net.py:load")
    assert 0 <= training < trained  # said before training
    summary = json.loads((out / "summary.json").read_text())
    recorded = summary["model_source"]  # with the checksum export checks
    assert recorded["trained"] is True and recorded["path"] == str(out / "model.pt")
    assert len(recorded["sha256"]) == 64 and summary["complete"] == 8
    assert "trained by this search" in (out / "report.md").read_text()
    again = run_cli(["search", str(_config(plug)), "--out", str(plug / "b"),
                     "--load", str(out / "model.pt")], capsys)  # fmt: skip
    assert again.rc == 0, again.err
    source = json.loads((plug / "b" / "summary.json").read_text())["model_source"]
    assert source["path"] == str(out / "model.pt") and len(source["sha256"]) == 64


def test_a_dataset_without_a_train_split_uses_the_model_as_built(plug, capsys):
    outcome = run_cli(["search", str(_config(plug, dataset="net.py:val_only")),
                       "--out", str(plug / "run")], capsys)  # fmt: skip
    assert outcome.rc == 0, outcome.err
    assert "with the weights it was built with" in outcome.out
    summary = json.loads((plug / "run" / "summary.json").read_text())
    assert summary["model_source"] == "as built"
    outcome = run_cli(["train", str(_config(plug, dataset="net.py:val_only")),
                       "--out", str(plug / "t")], capsys)  # fmt: skip
    assert error_problems(outcome) == [] and "no train split" in outcome.err


def test_a_package_module_spec(plug, capsys, monkeypatch):
    package = plug / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(plug))
    config = _config(plug, model="mypkg.nets:build", dataset="mypkg.nets:load")
    outcome = run_cli(["search", str(config), "--out", str(plug / "run")], capsys)
    assert outcome.rc == 0, outcome.err


@pytest.mark.parametrize(
    ("kw", "expect"),
    [
        ({"model": "missing.py:build"}, "no such file"),
        ({"model": "net.py:nothing"}, "has no attribute 'nothing'"),
        ({"model": "net.py:CONSTANT"}, "'CONSTANT' is not callable"),
        ({"model": "syntax.py:build"}, "does not import: SyntaxError"),
        ({"model": "no_such_package.models:build"}, "does not import: ModuleNotFoundError"),
        ({"model": "net.py:broken"}, "raised ValueError: no such width"),
        ({"model": "net.py:not_a_model"}, "returned int, not a torch.nn.Module"),
        ({"model": "net.py:"}, "must look like 'file.py:callable'"),
        ({"model_options": {"depth": 3}}, "takes no option 'depth'"),
        ({"dataset": "net.py:mismatched"}, "x and y must have the same number of rows"),
        ({"dataset": "net.py:no_val"}, "must return (x, y) or a dict with 'val'"),
        ({"dataset": "net.py:CONSTANT"}, "'CONSTANT' is not callable"),
    ],
)
def test_a_bad_plugin_is_one_line_exit_2(plug, capsys, kw, expect):
    config = _config(plug, **kw)
    for argv in (["search", str(config), "--out", str(plug / "o")], ["space", str(config)]):
        outcome = run_cli(argv, capsys)
        assert error_problems(outcome) == [], outcome.err
        assert expect in outcome.err, outcome.err
        assert str(config) in outcome.err
    assert not (plug / "o").exists()


@pytest.mark.parametrize(
    ("kw", "expect"),
    [
        # features that do not fit the model: trained first, or used as built
        ({"dataset": "net.py:wide"}, "train data: the model cannot run on rows of shape (10,)"),
        ({"dataset": "net.py:wide_val"}, "data: the model cannot run on rows of shape (10,)"),
        # sys.exit from a plug-in's function or module ended bitscout with status 0
        ({"dataset": "net.py:exits"}, "raised SystemExit: it called sys.exit(0)"),
        ({"model": "exits.py:build"}, "does not import: SystemExit: it called sys.exit('bye')"),
    ],
)
def test_a_plugin_failing_at_its_first_use_is_one_line_exit_2(plug, capsys, kw, expect):
    (plug / "exits.py").write_text("import sys\n\nsys.exit('bye')\n")
    config = _config(plug, **kw)
    outcome = run_cli(["search", str(config), "--out", str(plug / "o")], capsys)
    assert outcome.rc == 2 and error_problems(outcome) == [], outcome.err
    assert expect in outcome.err, outcome.err


def test_n_jobs_2_with_a_plugin_model(plug):
    doc = _doc()
    doc["search"]["strategy"]["setup"].update(n_jobs=2, n_trials=24)
    doc["search"]["search_space"]["seed"]["default"]["config"]["bias_width"] = [4, 8]
    config = write_config(plug / "jobs.toml", doc)
    driver = Path(__file__).with_name("worker_driver.py")
    argv = [sys.executable, str(driver), "search", str(config), "--out", str(plug / "run")]
    env = {**os.environ, "DRIVER_SLOW_S": "0.05"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    storage = JournalStorage(JournalFileBackend(str(plug / "run" / "study.journal")))
    study = optuna.load_study(study_name="bitscout", storage=storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 24
    assert len({t.user_attrs["worker"].split(":")[1] for t in finished}) == 2


def test_the_own_model_example_gives_the_same_trials_from_python_and_the_cli(tmp_path, capsys):
    example = ROOT / "examples" / "own_model"
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    outcome = run_cli(["search", str(example / "own_model.toml"), "--out", str(cli_out)], capsys)
    assert outcome.rc == 0, outcome.err
    script = [sys.executable, str(example / "search_own.py"), str(api_out)]
    done = subprocess.run(script, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "best config:" in done.stdout
    cli, api = pd.read_csv(cli_out / "trials.csv"), pd.read_csv(api_out / "trials.csv")
    assert len(cli) == 40
    pd.testing.assert_frame_equal(cli.drop(columns="duration_s"), api.drop(columns="duration_s"))
