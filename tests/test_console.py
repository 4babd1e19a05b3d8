"""What a search prints, read in an 80-column terminal, and what it leaves for Optuna's own
tools (optuna-dashboard, optuna.visualization)."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from cli_support import base_doc, edit, error_problems, run_cli, write_config
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from bitscout.cli import main


def _doc(trials: int = 24) -> dict:
    doc = base_doc()
    layer = doc["search"]["search_space"]["seed"]["seq_blocks_2"]["config"]
    layer.update(data_in_width=[4, 8, 16], weight_width=[2, 3, 4, 8], bias_width=[4, 8])
    doc["dataset_options"]["num_samples"] = 600
    return edit(doc, "search.strategy.setup", {"n_trials": trials, "sampler": "tpe", "seed": 0})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("console")
    config = write_config(root / "c.toml", _doc())
    assert main(["train", str(config), "--out", str(root / "t")]) == 0
    return str(root / "t" / "model.pt")


def _search(tmp_path, capsys, ckpt, *flags: str, doc: dict | None = None):
    config = write_config(tmp_path / "c.toml", doc or _doc())
    out = tmp_path / "run"
    outcome = run_cli(["search", str(config), "--out", str(out), "--load", ckpt, *flags], capsys)
    assert outcome.rc == 0, outcome.err
    return outcome.out, out


def test_default_output_is_new_bests_and_an_80_column_result(tmp_path, capsys, ckpt):
    text, _ = _search(tmp_path, capsys, ckpt)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    bests = [line for line in lines if line.startswith("new best: trial")]
    assert 1 <= len(bests) < 24  # a line per new best, not per trial
    assert not [line for line in lines if line.startswith("trial ")]
    flat = " ".join(text.split())
    assert "[fraction]" in flat and "[bits]" in flat and "[nats]" in flat  # units in headers
    # model_size and flops never change under quantization: said once, not as columns
    assert "the same for every trial: model_size 117 [parameters]" in flat
    assert "flops 213 [FLOPs]" in flat  # BatchNorm 2*16, ReLU 16, Linear 2*80, ReLU 5
    assert "float" in flat and "[points]" in flat  # the float baseline and the change
    assert "test split (" in flat and "the configs were chosen on validation" in flat


def test_verbose_prints_every_trial(tmp_path, capsys, ckpt):
    text, _ = _search(tmp_path, capsys, ckpt, "--verbose")
    trial_lines = [line for line in text.splitlines() if "trial " in line and "score" in line]
    assert len(trial_lines) == 24


def test_quiet_prints_only_the_final_result(tmp_path, capsys, ckpt):
    text, out = _search(tmp_path, capsys, ckpt, "--quiet")
    assert text.startswith("best distinct configs")
    for chatter in ("searching", "new best", "report:", "trials by this worker", "reusing"):
        assert chatter not in text
    assert "best config:" in text and (out / "report.md").exists()


def test_distinct_configs_with_their_proposal_counts(tmp_path, capsys, ckpt):
    doc = _doc(trials=60)  # TPE repeats itself on 24 candidates
    text, out = _search(tmp_path, capsys, ckpt, doc=doc)
    import pandas as pd

    trials = pd.read_csv(out / "trials.csv")
    dims = [c for c in trials if c.startswith("seq_blocks_2/")]
    counts = trials.groupby(dims).size()
    assert counts.max() > 1  # some config was proposed more than once
    configs = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#")]
    assert len(configs) == 10 == len(set(configs))  # ten distinct winners, each shown once
    first = next(line.split() for line in text.splitlines() if line.split()[:1] == ["1"])
    best = trials[trials["number"] == int(first[1])][dims].iloc[0]
    assert int(first[2]) == counts[tuple(best)]  # the `trials` column counts its proposals


def test_optuna_tools_see_each_metric(tmp_path, capsys, ckpt):
    _, out = _search(tmp_path, capsys, ckpt)
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    study = optuna.load_study(study_name="bitscout", storage=storage)
    assert study.metric_names == ["objective"]
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    for t in trials:
        assert t.user_attrs["accuracy"] == t.user_attrs["metrics"]["accuracy"]
        assert t.user_attrs["bops"] == t.user_attrs["metrics"]["bops"]
    from optuna.visualization.matplotlib import plot_pareto_front

    ax = plot_pareto_front(study, targets=lambda t: (t.user_attrs["accuracy"],
                           t.user_attrs["bops"]), target_names=["accuracy", "bops"])  # fmt: skip
    assert ax.get_xlabel() == "accuracy" and ax.get_ylabel() == "bops"


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("search.strategy.setup.sampler", "tpee", "did you mean 'tpe'"),
        ("search.strategy.name", "brutefroce", "did you mean 'bruteforce'"),
        ("search.strategy.metrics", {"acuracy": {"scale": 1.0}}, "did you mean 'accuracy'"),
    ],
)
def test_names_suggest_the_closest(tmp_path, capsys, key, value, hint):
    config = write_config(tmp_path / "c.toml", edit(_doc(), key, value))
    outcome = run_cli(["space", str(config)], capsys)
    assert error_problems(outcome) == [] and hint in outcome.err


def test_flags_suggest_the_closest(tmp_path, capsys, ckpt):
    config = write_config(tmp_path / "c.toml", _doc())
    outcome = run_cli(["search", str(config), "--sampler", "randmo"], capsys)
    assert error_problems(outcome) == [] and "did you mean 'random'" in outcome.err


def test_an_error_in_a_quant_file_names_that_file(tmp_path, capsys, ckpt):
    quant = tmp_path / "q.toml"
    quant.write_text('[passes.quantize]\nby = "name"\n[passes.quantize.default.config]\n'
                     'name = "NA"\n[passes.quantize.seq_blocks_9.config]\nname = "integer"\n'
                     "weight_width = 4\n")  # fmt: skip
    config = write_config(tmp_path / "c.toml", _doc())
    outcome = run_cli(["quantize", str(config), "--load", ckpt, "--quant", str(quant)], capsys)
    assert error_problems(outcome) == []
    assert outcome.err.startswith(f"bitscout: error: {quant}: passes.quantize.seq_blocks_9")


def test_trials_csv_has_lf_line_endings(tmp_path, capsys, ckpt):
    _, out = _search(tmp_path, capsys, ckpt)
    data = (out / "trials.csv").read_bytes()
    assert b"\r\n" not in data and data.count(b"\n") == 25


def test_long_configs_break_between_layers_never_inside_one():
    from bitscout.results.console import config_text, wrap_config

    config = {
        f"seq_blocks_{i}/{k}": v
        for i in range(0, 12, 2)
        for k, v in (("data_in_width", 16), ("weight_width", 8), ("weight_frac_width", 7))
    }
    text = config_text(config)
    for label in ("", "#10 ", "best config: "):
        lines = (label + wrap_config(text, len(label) or 2, len(label))).splitlines()
        assert len(lines) > 1 and all(len(line) <= 80 for line in lines)
        assert all(line.count("(") == line.count(")") for line in lines)
        assert " ".join(" ".join(lines).removeprefix(label).split()) == text


def test_plots_print_no_font_fallback_lines(tmp_path):
    """Log axes' mathtext tick labels made matplotlib log a "findfont" line per missing font
    on the console; in a fresh process, as a command draws its report."""
    code = (
        "import sys; from bitscout.results import plots; import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots(); ax.set_xscale('log'); ax.plot([1, 1e3, 1e6], [1, 2, 3])\n"
        "plots.save(fig, __import__('pathlib').Path(sys.argv[1]))"
    )
    png = tmp_path / "log.png"
    done = subprocess.run([sys.executable, "-c", code, str(png)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert png.exists() and "findfont" not in done.stderr + done.stdout
