"""`bitscout space` and the errors `bitscout search` gives for a bad config or search space.

Split from test_search.py; its helpers are in tests/search_support.py. One float checkpoint
is trained here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from search_support import DIMS, base_doc, write_config

from bitscout.cli import main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("search_errors")


@pytest.fixture(scope="module")
def ckpt(workdir) -> Path:
    cfg = write_config(workdir / "train.toml", base_doc())
    assert main(["train", str(cfg), "--out", str(workdir / "train")]) == 0
    return workdir / "train" / "model.pt"


# --- bitscout space -----------------------------------------------------------------------


def test_space_command_prints_dimensions(workdir, capsys):
    cfg = write_config(workdir / "space.toml", base_doc())
    assert main(["space", str(cfg)]) == 0
    out = capsys.readouterr().out
    for dim in DIMS:
        assert dim in out
    assert "4, 8, 16" in out
    assert out.count("2, 4, 8, 16") == 2
    assert "48 candidates" in out
    assert "seq_blocks_2/weight_frac_width" not in out


# --- config errors ------------------------------------------------------------------------


def _setup(**values):
    def change(doc):
        doc["search"]["strategy"]["setup"].update(values)

    return change


def _strategy(**values):
    def change(doc):
        doc["search"]["strategy"].update(values)

    return change


def _noop(doc):
    return None


SEARCH_ERRORS = [
    (
        "unknown-strategy",
        _strategy(name="annealing"),
        (),
        "search.strategy.name",
        "bruteforce, optuna",
    ),
    ("unknown-sampler", _setup(sampler="cmaes"), (), "search.strategy.setup.sampler", "tpe"),
    ("unknown-sampler-flag", _noop, ("--sampler", "cmaes"), "--sampler", "tpe"),
    ("unknown-strategy-flag", _noop, ("--strategy", "annealing"), "--strategy", "bruteforce"),
    (
        "unknown-metric",
        _strategy(metrics={"acuracy": {"scale": 1.0}}),
        (),
        "search.strategy.metrics.acuracy",
        "accuracy",
    ),
    ("trials-0", _noop, ("--trials", "0"), "--trials", ">= 1"),
    ("seed-negative", _noop, ("--seed=-1",), "--seed", ">= 0"),
    ("n_trials-0", _setup(n_trials=0), (), "search.strategy.setup.n_trials", ">= 1"),
    (
        "eval_mode-string",
        _strategy(eval_mode="false"),
        (),
        "search.strategy.eval_mode",
        "must be true or false",
    ),
    (
        "basic_train-optimizer",
        _strategy(eval_mode=False, sw_runner={"basic_train": {"optimizer": "adamm"}}),
        (),
        "search.strategy.sw_runner.basic_train.optimizer",
        "did you mean 'adam'",
    ),
    (
        "basic_train-epochs",
        _strategy(eval_mode=False, sw_runner={"basic_train": {"max_epochs": -1}}),
        (),
        "search.strategy.sw_runner.basic_train.max_epochs",
        ">= 1",
    ),
    (
        "setup-typo",
        _setup(n_trails=48),
        (),
        "search.strategy.setup.n_trails",
        "did you mean 'n_trials'",
    ),
    ("strategy-typo", _strategy(metric={}), (), "search.strategy.metric", "did you mean 'metrics'"),
    ("direction", _setup(direction="up"), (), "search.strategy.setup.direction", "maximize"),
    (
        "latency_shared-string",
        _setup(latency_shared="yes"),
        (),
        "search.strategy.setup.latency_shared",
        "true or false",
    ),
    (
        "bad-constraint",
        _strategy(constraints={"accuracy": "at least 0.9"}),
        (),
        "search.strategy.constraints.accuracy",
        ">=",
    ),
    (
        "sum-not-bool",
        _setup(sum_scaled_metrics="yes"),
        (),
        "search.strategy.setup.sum_scaled_metrics",
        "true or false",
    ),
]


def _check_one_line_error(capsys, key: str, words: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert lines[0].startswith("bitscout: error: ")
    assert key in lines[0]
    assert words in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("change", "args", "key", "words"),
    [e[1:] for e in SEARCH_ERRORS],
    ids=[e[0] for e in SEARCH_ERRORS],
)
def test_search_config_errors(tmp_path, capsys, change, args, key, words):
    doc = base_doc()
    change(doc)
    cfg = write_config(tmp_path / "bad.toml", doc)
    out = tmp_path / "out"
    rc = main(["search", str(cfg), "--out", str(out), "--load", str(tmp_path / "none.pt"), *args])
    assert rc == 2
    _check_one_line_error(capsys, key, words)
    assert not out.exists()


def test_search_missing_config_file(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["search", str(tmp_path / "missing.toml"), "--out", str(out)]) == 2
    _check_one_line_error(capsys, "missing.toml", "cannot read")
    assert not out.exists()


def _bad_space(doc):
    doc["search"]["search_space"]["seed"]["seq_blocks_2"]["config"]["weight_width"] = [0, 4]


def _bad_layer(doc):
    doc["search"]["search_space"]["seed"]["seq_blocks_3"] = {"config": {"name": ["NA"]}}


SPACE_ERRORS = [
    ("bad-width", _bad_space, "search.search_space.seed.seq_blocks_2.config.weight_width", "1..32"),
    ("unknown-layer", _bad_layer, "search.search_space.seed.seq_blocks_3", "seq_blocks_2"),
]


@pytest.mark.parametrize(
    ("change", "key", "words"), [e[1:] for e in SPACE_ERRORS], ids=[e[0] for e in SPACE_ERRORS]
)
def test_search_space_errors_exit_2(tmp_path, capsys, ckpt, change, key, words):
    doc = base_doc()
    change(doc)
    cfg = write_config(tmp_path / "bad.toml", doc)
    rc = main(["search", str(cfg), "--out", str(tmp_path / "out"), "--load", str(ckpt)])
    assert rc == 2
    _check_one_line_error(capsys, key, words)
    assert not (tmp_path / "out" / "trials.csv").exists()


@pytest.mark.parametrize(
    ("change", "key", "words"), [e[1:] for e in SPACE_ERRORS], ids=[e[0] for e in SPACE_ERRORS]
)
def test_search_space_errors_create_no_output_dir(tmp_path, capsys, ckpt, change, key, words):
    doc = base_doc()
    change(doc)
    cfg = write_config(tmp_path / "bad.toml", doc)
    out = tmp_path / "out"
    assert main(["search", str(cfg), "--out", str(out), "--load", str(ckpt)]) == 2
    _check_one_line_error(capsys, key, words)
    assert not out.exists()


def test_an_os_error_raised_while_unwinding_from_an_interrupt_is_the_interrupt(monkeypatch, capsys):
    """Ctrl-C between the steps of Optuna's journal lock release leaves its rename to fail with
    ENOENT while the interrupt unwinds: exit 130 and the resume line, not exit 1."""
    import errno

    from bitscout.cli import space

    def interrupted(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError(errno.ENOENT, "No such file or directory", "study.journal.lock") from None

    monkeypatch.setattr(space, "cmd_space", interrupted)
    assert main(["space", "any.toml"]) == 130
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(space, "cmd_space", lambda args: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device", "x")))  # fmt: skip
    assert main(["space", "any.toml"]) == 1
