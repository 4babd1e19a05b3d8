"""`bitscout finetune RUN_DIR` and `bitscout export RUN_DIR/finetune/trial_N`: the configs of a
finished search trained and written beside it, every bad option one line with exit status 2,
and the export of the fine-tuned weights bit-exact against hls4ml's C++ emulation."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import pytest
import torch
from cli_support import digits_doc, edit, error_problems, run_cli, write_config
from hls4ml_support import need_hls4ml

from bitscout.cli import build
from bitscout.cli.main import main
from bitscout.quant import quantize_model
from bitscout.zoo.models import build_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A post-training search of the digits MLP (8 trials of 8 candidates)."""
    root = tmp_path_factory.mktemp("finetune_run")
    doc = digits_doc(data_in_width=[6, 8], data_in_frac_width=[3], weight_width=[2, 3],
                     weight_frac_width=[2], bias_width=[8], bias_frac_width=[5])  # fmt: skip
    doc = edit(doc, "search.strategy.setup", {"n_trials": 8, "sampler": "random", "seed": 0})
    config = write_config(root / "digits.toml", doc)
    assert main(["search", str(config), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def tuned(run_dir) -> dict[int, dict]:
    """`bitscout finetune RUN --top 2 --epochs 2`: its output and metrics.json per trial."""
    assert main(["finetune", str(run_dir), "--top", "2", "--epochs", "2"]) == 0
    found = {}
    for path in sorted((run_dir / "finetune").iterdir()):
        found[int(path.name.removeprefix("trial_"))] = json.loads(
            (path / "metrics.json").read_text()
        )
    return found


def test_finetune_writes_each_config_and_the_report(run_dir, tuned, capsys):
    assert len(tuned) == 2
    for trial, record in tuned.items():
        assert record["trial"] == trial and record["epochs"] == 2
        assert record["train"]["batch_size"] == 64  # the config's batch_size, the defaults
        assert record["test"] is not None  # the digits data has a test split
        assert record["before"]["accuracy"] <= 1 and record["after"]["accuracy"] <= 1
    assert "## Fine-tuned" in (run_dir / "report.md").read_text()
    outcome = run_cli(["report", str(run_dir)], capsys)  # the section stays on a rewrite
    assert outcome.rc == 0 and "## Fine-tuned" in (run_dir / "report.md").read_text()
    trial = min(tuned)
    outcome = run_cli(["finetune", str(run_dir), "--trial", str(trial), "--epochs", "1"], capsys)
    assert outcome.rc == 0, outcome.err
    (line,) = [x for x in outcome.out.splitlines() if x.startswith(f"trial {trial}:")]
    record = json.loads((run_dir / "finetune" / f"trial_{trial}" / "metrics.json").read_text())
    after = record["after"]["accuracy"]
    assert f"-> {after:.4f} (test {record['test']['accuracy']:.4f}), 1 epochs" in line


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["--trial", "99"], "--trial"),
        (["--trial", "1", "--top", "2"], "--top"),
        (["--epochs", "0"], "--epochs"),
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--top", "0"], "--top"),
        (["--epochs", "x"], "--epochs"),
    ],
)
def test_every_bad_option_is_one_line_and_exit_2(run_dir, capsys, argv, key):
    outcome = run_cli(["finetune", str(run_dir), *argv], capsys)
    assert not error_problems(outcome) and key in outcome.err, outcome


def test_a_run_without_a_train_split_is_refused(run_dir, capsys, monkeypatch):
    real = build.load_data

    def no_train(cfg, console=None):
        return dataclasses.replace(real(cfg, console), x_train=None, y_train=None)

    monkeypatch.setattr(build, "load_data", no_train)
    outcome = run_cli(["finetune", str(run_dir)], capsys)
    assert not error_problems(outcome) and "no train split" in outcome.err, outcome
    outcome = run_cli(["finetune", str(run_dir / "nope")], capsys)
    assert not error_problems(outcome), outcome


def test_export_of_a_fine_tuned_directory_verifies_bit_exact(run_dir, tuned, capsys):
    need_hls4ml()
    trial = min(tuned)
    tuned_dir = run_dir / "finetune" / f"trial_{trial}"
    outcome = run_cli(["export", str(tuned_dir), "--to", "hls4ml", "--verify", "--rows", "300"],
                      capsys)  # fmt: skip
    assert outcome.rc == 0, outcome.err
    found = json.loads((tuned_dir / "export" / "verify.json").read_text())
    assert found["rows"] == 300 and found["layers"]
    assert all(e["max_abs_difference"] == 0.0 for e in found["layers"])
    assert found["top_class_agreement"] == 1.0 and found["max_logit_difference"] == 0.0
    # the exported weights are the fine-tuned ones on their grid, not the searched model's
    plain = run_cli(["export", str(run_dir), "--trial", str(trial), "--to", "checkpoint"], capsys)
    assert plain.rc == 0, plain.err
    exported = torch.load(tuned_dir / "export" / "quantized.pt", weights_only=True)
    original = torch.load(run_dir / f"export_trial_{trial}" / "quantized.pt", weights_only=True)
    model = build_model("mlp")
    model.load_state_dict(torch.load(tuned_dir / "model.pt", weights_only=True))
    plan = tomllib.loads((tuned_dir / "best.toml").read_text())["passes"]["quantize"]
    layer = quantize_model(model.eval(), plan).seq_blocks[0]
    width = plan["seq_blocks_0"]["config"]
    scale = 2.0 ** width["weight_frac_width"]
    top = 2 ** (width["weight_width"] - 1)
    grid = torch.clamp(torch.round(layer.weight.detach() * scale), -top, top - 1) / scale
    assert torch.equal(exported["seq_blocks.0.weight"], grid)  # round half even, saturate
    assert not torch.equal(exported["seq_blocks.0.weight"], original["seq_blocks.0.weight"])
    for argv, key in ((["--trial", "1"], "--trial"), (["--quant", "x.toml"], "--quant")):
        bad = run_cli(["export", str(tuned_dir), "--to", "npz", *argv], capsys)
        assert not error_problems(bad) and key in bad.err, bad


def test_finetune_of_a_qat_run_reproduces_its_trained_candidate(tmp_path):
    """A search with `eval_mode = false`: `bitscout finetune` takes the config's basic_train
    table and the run's seed, so the best config trains to the metrics the search recorded."""
    doc = digits_doc(data_in_width=[4, 8], data_in_frac_width=[2], weight_width=[2, 3],
                     weight_frac_width=[2], bias_width=[8], bias_frac_width=[5])  # fmt: skip
    doc["search"]["strategy"]["name"] = "bruteforce"
    doc["search"]["strategy"]["eval_mode"] = False
    doc["search"]["strategy"]["sw_runner"] = {"basic_train": {
        "max_epochs": 2, "learning_rate": 3e-3, "optimizer": "adamw"}}  # fmt: skip
    config = write_config(tmp_path / "qat.toml", doc)
    out = tmp_path / "run"
    assert main(["search", str(config), "--out", str(out), "--quiet"]) == 0
    best = tomllib.loads((out / "best.toml").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["optimizer"] == "adamw" and summary["train"]["epochs"] == 2
    assert main(["finetune", str(out)]) == 0
    (tuned,) = (out / "finetune").iterdir()
    record = json.loads((tuned / "metrics.json").read_text())
    assert record["train"]["optimizer"] == "adamw" and record["epochs"] == 2
    assert tomllib.loads((tuned / "best.toml").read_text()) == best
    assert record["after"]["accuracy"] == pytest.approx(summary["best"]["metrics"]["accuracy"])
