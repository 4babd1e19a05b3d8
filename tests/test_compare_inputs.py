"""`bitscout compare`'s inputs: the help lists every strategy, bad thresholds, budgets and
arguments are one-line config errors before any work, unknown strategies and multi-objective
configs are refused, and where the float model came from is recorded. Nothing is trained here.
Split from tests/test_compare.py."""

from __future__ import annotations

import copy
import hashlib

import pytest
from compare_support import base_doc, config_path, quiet, workdir, write_config  # noqa: F401 - the fixtures

from bitscout.analysis.compare import KNOWN
from bitscout.cli import main
from bitscout.cli.compare import run_compare
from bitscout.cli.config import load_config
from bitscout.errors import ConfigError


def test_help_lists_every_strategy_label(capsys):
    with pytest.raises(SystemExit) as done:
        main(["compare", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for label in KNOWN:
        assert f" {label}," in text or f" {label} (" in text


@pytest.mark.parametrize(("flag", "value"), [("--within", "0"), ("--within", "nan"),
                                             ("--budgets", "100,50"), ("--budgets", "x")])  # fmt: skip
def test_bad_threshold_or_budgets_are_one_line_before_any_work(config_path, tmp_path, capsys,  # noqa: F811
                                                               flag, value):  # fmt: skip
    out = tmp_path / "out"
    assert main(["compare", str(config_path), flag, value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err
    assert not out.exists()


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"strategies": ["bruteforce", "annealing"]}, "--strategies"),
        ({"strategies": []}, "--strategies"),
        ({"strategies": ["tpe", "tpe"]}, "--strategies"),
        ({"repeats": 0}, "--repeats"),
        ({"trials": 0}, "--trials"),
    ],
)
def test_bad_arguments_are_config_errors(workdir, config_path, kwargs, key):  # noqa: F811
    args = {"strategies": ["tpe"], "repeats": 1, "trials": None} | kwargs
    out = workdir / f"bad-{key.strip('-')}"
    with pytest.raises(ConfigError) as err:
        run_compare(load_config(config_path), args["strategies"], args["repeats"], out, quiet(),
                    trials=args["trials"])  # fmt: skip
    assert err.value.key == key
    assert not out.exists()  # refused before anything was written


def test_unknown_strategy_lists_the_known_ones(config_path, tmp_path):  # noqa: F811
    with pytest.raises(
        ConfigError, match="known: bruteforce, bruteforce-reversed, shuffled, greedy"
    ):
        run_compare(load_config(config_path), "bruteforce,sa", 1, tmp_path / "x", quiet())


def test_multi_objective_is_refused(workdir, tmp_path):  # noqa: F811
    doc = copy.deepcopy(base_doc())
    doc["search"]["strategy"]["setup"]["sum_scaled_metrics"] = False
    cfg = load_config(write_config(tmp_path / "multi.toml", doc))
    with pytest.raises(ConfigError) as err:
        run_compare(cfg, ["tpe"], 1, tmp_path / "out", quiet())
    assert err.value.key == "search.strategy.setup.sum_scaled_metrics"


def test_model_record_names_where_the_float_model_came_from(tmp_path):
    from bitscout.cli.compare import model_record

    (tmp_path / "model.pt").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert model_record("trained", tmp_path) == {
        "source": "trained", "checkpoint": str(tmp_path / "model.pt"), "checkpoint_sha256": digest
    }  # fmt: skip
    recorded = {"trained": True, "path": str(tmp_path / "model.pt"), "sha256": digest}
    assert model_record(recorded, tmp_path) == model_record("trained", tmp_path)
    given = {"path": "ck.pt", "sha256": "ab"}
    assert model_record(given, tmp_path) == {
        "source": "checkpoint", "checkpoint": "ck.pt", "checkpoint_sha256": "ab"
    }  # fmt: skip
    assert model_record("as built", tmp_path) == {"source": "as built"}
