"""Quantization-aware searches from a config (issue 21, item 1): a MASE config with
`eval_mode = false` and its `sw_runner.basic_train` table runs unchanged, gives the trials
`bitscout.search(train=...)` gives, and every bad training option is one line, exit 2."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from cli_support import DELETE, base_doc, edit, error_problems, run_cli, write_config

import bitscout
from bitscout.cli import main
from bitscout.study.settings import parse_settings, python_settings
from bitscout.zoo.train import load_checkpoint

STRATEGY = "search.strategy"
RUNNER = f"{STRATEGY}.sw_runner.basic_train"
# MASE's basic_train table as MASE users write it (chop's search configs), verbatim
MASE_TABLE: dict[str, Any] = {
    "name": "accuracy",
    "data_loader": "train_dataloader",
    "num_samples": 1000000,
    "max_epochs": 10,
    "lr_scheduler": "linear",
    "optimizer": "adam",
    "learning_rate": 1e-4,
    "num_warmup_steps": 0,
}


def _qat_doc(table: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = base_doc()
    edit(doc, f"{STRATEGY}.eval_mode", False)
    edit(doc, RUNNER, dict(MASE_TABLE if table is None else table))
    return doc


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """The base config's float model (jsc-tiny on 300 fake rows), trained once."""
    root = tmp_path_factory.mktemp("qat_cli")
    config = write_config(root / "base.toml", base_doc())
    assert main(["train", str(config), "--out", str(root / "train")]) == 0
    return root / "train" / "model.pt"


def test_a_mase_basic_train_table_runs_unchanged(tmp_path, capsys, ckpt):
    config = write_config(tmp_path / "mase.toml", _qat_doc())
    out = tmp_path / "run"
    outcome = run_cli(["search", str(config), "--out", str(out), "--load", str(ckpt)], capsys)
    assert outcome.rc == 0, outcome.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"] == {
        "epochs": 10, "learning_rate": 1e-4, "optimizer": "adam", "weight_decay": 0.0,
        "batch_size": 64, "lr_scheduler": "linear", "warmup_steps": 0, "accumulation": 1,
        "num_samples": 1000000, "seed": 1,
    }  # fmt: skip
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and set(trials["epochs"]) == {10}
    ptq = tmp_path / "ptq"
    config = write_config(tmp_path / "ptq.toml", base_doc())
    assert run_cli(["search", str(config), "--out", str(ptq), "--load", str(ckpt)], capsys).rc == 0
    assert not pd.read_csv(ptq / "trials.csv")["loss"].equals(trials["loss"])


def test_an_empty_basic_train_table_takes_the_defaults(tmp_path, capsys, ckpt):
    doc = base_doc()
    edit(doc, f"{STRATEGY}.eval_mode", False)
    config = write_config(tmp_path / "c.toml", doc)
    out = tmp_path / "run"
    outcome = run_cli(["search", str(config), "--out", str(out), "--load", str(ckpt)], capsys)
    assert outcome.rc == 0, outcome.err
    train = json.loads((out / "summary.json").read_text())["train"]
    assert (train["epochs"], train["learning_rate"], train["optimizer"]) == (3, 1e-3, "adam")
    assert (train["batch_size"], train["lr_scheduler"], train["num_samples"]) == (
        64,
        "linear",
        None,
    )


# --- the same training from both doors ---------------------------------------------------

NET = """
import numpy as np
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 12), nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


def build():
    return Net()


def load(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(240, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return {"train": (x[:160], y[:160]), "val": (x[160:], y[160:])}


def val_only(seed=0):
    return load(seed)["val"]
"""
LAYER = {"name": ["integer"], "data_in_width": [2, 4], "weight_width": [2, 4], "bias_width": [8]}
SPACE = {"setup": {"by": "name"},
         "seed": {"default": {"config": {"name": ["NA"]}}, "fc1": {"config": LAYER}}}  # fmt: skip
TOML_TRAIN = {"max_epochs": 2, "learning_rate": 5e-3, "optimizer": "sgd", "batch_size": 32,
              "lr_scheduler": "cosine", "num_warmup_steps": 2, "weight_decay": 1e-3,
              "gradient_accumulation_steps": 2, "num_samples": 250}  # fmt: skip
PY_TRAIN = {"epochs": 2, "lr": 5e-3, "optimizer": "sgd", "batch_size": 32,
            "lr_scheduler": "cosine", "warmup_steps": 2, "weight_decay": 1e-3,
            "accumulation": 2, "num_samples": 250}  # fmt: skip


@pytest.fixture
def plug(tmp_path: Path) -> Path:
    (tmp_path / "net.py").write_text(NET)
    return tmp_path


def _plug_doc(dataset: str = "net.py:load") -> dict[str, Any]:
    strategy = {"name": "bruteforce", "eval_mode": False, "metrics": {"accuracy": {"scale": 1.0}},
                "sw_runner": {"basic_train": dict(TOML_TRAIN)}}  # fmt: skip
    return {"model": "net.py:build", "dataset": dataset, "max_epochs": 2, "seed": 4,
            "search": {"search_space": SPACE, "strategy": strategy}}  # fmt: skip


def test_python_and_toml_train_alike(plug, capsys):
    cli_out, api_out = plug / "cli", plug / "api"
    config = write_config(plug / "c.toml", _plug_doc())
    outcome = run_cli(["search", str(config), "--out", str(cli_out)], capsys)
    assert outcome.rc == 0, outcome.err
    spec = importlib.util.spec_from_file_location("qat_net", plug / "net.py")
    assert spec is not None and spec.loader is not None
    net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(net)
    model = load_checkpoint(net.build(), cli_out / "model.pt")
    splits = {k: (torch.from_numpy(x), torch.from_numpy(y)) for k, (x, y) in net.load(4).items()}
    bitscout.search(model, splits["val"], SPACE, strategy="bruteforce", seed=4, out=api_out,
                    train=PY_TRAIN, train_data=splits["train"], quiet=True)  # fmt: skip
    cli, api = (
        pd.read_csv(d / "trials.csv").drop(columns="duration_s") for d in (cli_out, api_out)
    )
    pd.testing.assert_frame_equal(cli, api)
    assert set(cli["epochs"]) == {2}  # 250 samples of 160 rows: into the second epoch


def test_the_settings_of_both_doors_are_equal():
    toml = {"strategy": {"eval_mode": False, "sw_runner": {"basic_train": dict(TOML_TRAIN)},
                         "fidelity": {"min_epochs": 2, "reduction_factor": 2},
                         "metrics": {"accuracy": {"scale": 1.0}}}}  # fmt: skip
    parsed = parse_settings(toml, 0)
    given = python_settings("tpe", parsed.objective, train=PY_TRAIN,
                            fidelity={"min_epochs": 2, "reduction_factor": 2})  # fmt: skip
    assert parsed.train == given.train and parsed.fidelity == given.fidelity


# --- one line, exit 2 --------------------------------------------------------------------


def _one_line(outcome, *words: str) -> str:
    problems = error_problems(outcome)
    assert not problems, "\n".join([*problems, outcome.err])
    for word in words:
        assert word in outcome.err, outcome.err
    return outcome.err


BAD = [
    ("optimizer", {**MASE_TABLE, "optimizer": "adma"}, (f"{RUNNER}.optimizer", "did you mean 'adam'")),
    ("epochs-0", {**MASE_TABLE, "max_epochs": 0}, (f"{RUNNER}.max_epochs", ">= 1")),
    ("epochs-negative", {**MASE_TABLE, "max_epochs": -3}, (f"{RUNNER}.max_epochs", ">= 1")),
    ("lr-0", {**MASE_TABLE, "learning_rate": 0}, (f"{RUNNER}.learning_rate", "finite number > 0")),
    ("lr-inf", {**MASE_TABLE, "learning_rate": math.inf}, (f"{RUNNER}.learning_rate", "finite")),
    ("lr-string", {**MASE_TABLE, "learning_rate": "1e-4"}, (f"{RUNNER}.learning_rate", "number")),
    ("scheduler", {**MASE_TABLE, "lr_scheduler": "step"}, (f"{RUNNER}.lr_scheduler", "linear")),
    ("num-samples-0", {**MASE_TABLE, "num_samples": 0}, (f"{RUNNER}.num_samples", ">= 1")),
    ("accumulation-0", {"gradient_accumulation_steps": 0},
     (f"{RUNNER}.gradient_accumulation_steps", ">= 1")),
    ("unknown-key", {"max_epoch": 2}, (f"{RUNNER}.max_epoch", "did you mean 'max_epochs'")),
    ("python-name", {"lr": 1e-3}, (f"{RUNNER}.lr", "known: ")),
    ("data-loader", {"data_loader": "val_dataloader"}, (f"{RUNNER}.data_loader", "train_dataloader")),
    ("not-a-table", 3, (RUNNER, "must be a table")),
]  # fmt: skip


@pytest.mark.parametrize(("table", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_basic_train_value_is_one_line(tmp_path, capsys, table, words):
    doc = base_doc()
    edit(doc, f"{STRATEGY}.eval_mode", False)
    edit(doc, RUNNER, table)
    config = write_config(tmp_path / "c.toml", doc)
    out = tmp_path / "run"
    _one_line(run_cli(["search", str(config), "--out", str(out)], capsys), *words)
    assert not out.exists()


OTHER = [
    ("eval-mode-string", ((f"{STRATEGY}.eval_mode", "false"),),
     (f"{STRATEGY}.eval_mode", "must be true or false")),
    ("eval-mode-int", ((f"{STRATEGY}.eval_mode", 0),), (f"{STRATEGY}.eval_mode", "true or false")),
    ("fidelity-without-training", ((f"{STRATEGY}.fidelity", {"min_epochs": 1}),),
     (f"{STRATEGY}.fidelity", f"needs quantization-aware training ({STRATEGY}.eval_mode)")),
    ("fidelity-pareto", ((f"{STRATEGY}.eval_mode", False), (f"{STRATEGY}.fidelity", {}),
                         (f"{STRATEGY}.setup.sum_scaled_metrics", False)),
     (f"{STRATEGY}.fidelity", "one objective")),
    ("fidelity-greedy", ((f"{STRATEGY}.eval_mode", False), (f"{STRATEGY}.fidelity", {}),
                         (f"{STRATEGY}.name", "greedy"), (f"{STRATEGY}.setup.sampler", DELETE)),
     (f"{STRATEGY}.fidelity", "bruteforce")),
    ("fidelity-unknown-key", ((f"{STRATEGY}.eval_mode", False),
                              (f"{STRATEGY}.fidelity", {"min_epoch": 1})),
     (f"{STRATEGY}.fidelity.min_epoch", "did you mean 'min_epochs'")),
    ("fidelity-pruner", ((f"{STRATEGY}.eval_mode", False),
                         (f"{STRATEGY}.fidelity", {"pruner": "median"})),
     (f"{STRATEGY}.fidelity.pruner", "successive_halving")),
]  # fmt: skip


@pytest.mark.parametrize(("edits", "words"), [o[1:] for o in OTHER], ids=[o[0] for o in OTHER])
def test_a_bad_training_setting_is_one_line(tmp_path, capsys, edits, words):
    doc = base_doc()
    for key, value in edits:
        edit(doc, key, value)
    config = write_config(tmp_path / "c.toml", doc)
    out = tmp_path / "run"
    _one_line(run_cli(["search", str(config), "--out", str(out)], capsys), *words)
    assert not out.exists()


def test_a_flag_that_makes_the_ladder_unclimbable_is_one_line(tmp_path, capsys):
    doc = _qat_doc({**MASE_TABLE, "max_epochs": 2})
    edit(doc, f"{STRATEGY}.fidelity", {"min_epochs": 1})
    config = write_config(tmp_path / "c.toml", doc)
    out = tmp_path / "run"
    argv = ["search", str(config), "--out", str(out), "--strategy", "greedy"]
    _one_line(run_cli(argv, capsys), f"{STRATEGY}.fidelity", "Optuna's samplers and bruteforce")
    assert not out.exists()


def test_eval_mode_false_without_a_train_split_is_one_line(plug, capsys):
    config = write_config(plug / "c.toml", _plug_doc("net.py:val_only"))
    out = plug / "run"
    err = _one_line(run_cli(["search", str(config), "--out", str(out)], capsys),
                    f"{STRATEGY}.eval_mode", "has no train split")  # fmt: skip
    assert "net.py:val_only" in err and not out.exists()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_loss_that_becomes_nan_is_one_line(plug, capsys, n_jobs):
    # SGD's steps scale with the learning rate: fc2 (float) overflows at the next forward
    # (jsc-tiny would not: its one layer is quantized, saturating whatever the weights)
    doc = _plug_doc()
    edit(doc, f"{RUNNER}.learning_rate", 1e30)
    edit(doc, f"{STRATEGY}.setup.n_jobs", n_jobs)
    config = write_config(plug / "c.toml", doc)
    argv = ["search", str(config), "--out", str(plug / "run")]
    _one_line(run_cli(argv, capsys), "learning_rate", "made the training loss")


@pytest.mark.parametrize(
    ("setup", "flag", "key"),
    [
        ({"order": "shuffled"}, "tpe", "order"),
        ({"warm_start": "greedy"}, "bruteforce", "warm_start"),
    ],
)
def test_a_strategy_flag_that_strands_a_setup_key_is_one_line(tmp_path, capsys, setup, flag, key):
    """A config's brute-force `order` under `--strategy tpe` (or a sampler's `warm_start`
    under `--strategy bruteforce`) would be ignored without a word: refused as the config
    alone is."""
    doc = base_doc()
    name = "bruteforce" if key == "order" else "optuna"
    edit(doc, f"{STRATEGY}.name", name)
    edit(doc, f"{STRATEGY}.setup", {**doc["search"]["strategy"].get("setup", {}), **setup})
    config = write_config(tmp_path / "c.toml", doc)
    assert run_cli(["space", str(config)], capsys).rc == 0
    out = tmp_path / "run"
    argv = ["search", str(config), "--out", str(out), "--strategy", flag]
    _one_line(run_cli(argv, capsys), f"{STRATEGY}.setup.{key}", "applies to")
    assert not out.exists()
