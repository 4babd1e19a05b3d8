"""One front door: `bitscout.search(...)` and `bitscout search CONFIG` accept, refuse and default
every search parameter alike, in the same words (only the key differs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from cli_support import base_doc, edit, run_cli, write_config
from spec_support import MODEL, SPACE
from spec_support import data as _data
from spec_support import python_error as _python_error
from spec_support import space as _space

import bitscout
from bitscout.errors import ConfigError
from bitscout.study.settings import parse_settings, python_settings

SETUP = "search.strategy.setup"


def _toml_error(name: str | None = None, **setup) -> ConfigError:
    strategy = {"setup": setup, "metrics": {"accuracy": {"scale": 1.0}},
                **({"name": name} if name is not None else {})}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        parse_settings({"strategy": strategy}, 0)
    return caught.value


# (Python argument, TOML key under [search.strategy.setup], a bad value) for every parameter
# both doors take
PARITY = [
    ("trials", "n_trials", 0),
    ("trials", "n_trials", -5),
    ("trials", "n_trials", 2.5),
    ("trials", "n_trials", "3"),
    ("trials", "n_trials", True),
    ("seed", "seed", -1),
    ("seed", "seed", 2**40),
    ("seed", "seed", "0"),
    ("timeout", "timeout", -1),
    ("timeout", "timeout", 0),
    ("timeout", "timeout", "soon"),
    ("timeout", "timeout", float("nan")),
    ("n_jobs", "n_jobs", 0),
    ("n_jobs", "n_jobs", "2"),
    ("n_jobs", "n_jobs", 10**6),
    ("n_jobs_limit", "n_jobs_limit", 0),
    ("order", "order", "random"),
    ("order", "order", "SHUFFLD"),
    ("order", "order", 3),
    ("warm_start", "warm_start", "tpe"),
    ("warm_start", "warm_start", "ilpp"),
    ("chunked", "chunked", "yes"),
    ("sensitivity", "sensitivity", 3),
    ("sensitivity", "sensitivity", ""),
    ("latency_repeats", "latency_repeats", 0),
    ("latency_warmup", "latency_warmup", -1),
    ("latency_budget_s", "latency_budget_s", -0.5),
    ("latency_shared", "latency_shared", 1),
    ("audit_rate", "audit_rate", -0.1),
    ("audit_rate", "audit_rate", 1.5),
    ("audit_rate", "audit_rate", "often"),
]


@pytest.mark.parametrize(("kwarg", "toml", "bad"), PARITY, ids=lambda v: repr(v))
def test_a_bad_value_gets_the_same_message_from_both_doors(kwarg, toml, bad):
    python, config = _python_error(**{kwarg: bad}), _toml_error(**{toml: bad})
    assert python.key == kwarg and config.key == f"{SETUP}.{toml}"
    assert python.rule == config.rule
    assert (python.value is bad and config.value is bad) or python.value == config.value


def test_the_parity_table_covers_every_parameter_both_doors_take():
    from bitscout.study.spec import PARAMS

    both = {(p.python, p.toml) for p in PARAMS if p.python and p.toml}
    assert both == {(kwarg, toml) for kwarg, toml, _ in PARITY}


# train= and fidelity= (Python names, keys of a dict) against [search.strategy.sw_runner.
# basic_train] and [search.strategy.fidelity] (MASE's names): (table, Python, TOML, bad value)
RUNNER, LADDER = "search.strategy.sw_runner.basic_train", "search.strategy.fidelity"
TRAIN_PARITY = [
    *(("train", "epochs", "max_epochs", bad) for bad in (0, -1, 2.5, True, "3")),
    *(("train", "lr", "learning_rate", bad) for bad in (0, -1e-3, math.inf, math.nan, "fast")),
    ("train", "optimizer", "optimizer", "adma"),
    ("train", "optimizer", "optimizer", 3),
    ("train", "weight_decay", "weight_decay", -0.1),
    ("train", "weight_decay", "weight_decay", math.inf),
    ("train", "batch_size", "batch_size", 0),
    ("train", "lr_scheduler", "lr_scheduler", "step"),
    ("train", "warmup_steps", "num_warmup_steps", -1),
    ("train", "accumulation", "gradient_accumulation_steps", 0),
    ("train", "num_samples", "num_samples", 0),
    ("train", "num_samples", "num_samples", -2),
    ("fidelity", "pruner", "pruner", "median"),
    ("fidelity", "min_epochs", "min_epochs", 0),
    ("fidelity", "reduction_factor", "reduction_factor", 1),
    ("fidelity", "ptq_rung", "ptq_rung", "yes"),
]


def _training_doors(table: str, python: dict, toml: dict) -> tuple:
    """What `bitscout.search(train=..., fidelity=...)` and `parse_settings` make of a table
    (its settings, or the ConfigError)."""
    kwargs = {"train": python if table == "train" else {},
              "fidelity": python if table == "fidelity" else None}  # fmt: skip
    strategy = {"eval_mode": False, "metrics": {"accuracy": {"scale": 1.0}},
                "sw_runner": {"basic_train": toml if table == "train" else {}},
                **({"fidelity": toml} if table == "fidelity" else {})}  # fmt: skip
    objective = parse_settings({"strategy": {"metrics": {"accuracy": {"scale": 1.0}}}}, 0).objective
    found = []
    for make in (lambda: python_settings("tpe", objective, **kwargs),
                 lambda: parse_settings({"strategy": strategy}, 0)):  # fmt: skip
        try:
            found.append(make())
        except ConfigError as err:
            found.append(err)
    return tuple(found)


@pytest.mark.parametrize(("table", "kwarg", "toml", "bad"), TRAIN_PARITY, ids=repr)
def test_a_bad_training_value_gets_the_same_message_from_both_doors(table, kwarg, toml, bad):
    python, config = _training_doors(table, {kwarg: bad}, {toml: bad})
    prefix = RUNNER if table == "train" else LADDER
    assert (python.key, config.key) == (f"{table}.{kwarg}", f"{prefix}.{toml}")
    assert python.rule == config.rule
    assert python.value == config.value or (python.value is bad and config.value is bad)


def test_the_training_parity_table_covers_every_setting_both_doors_take():
    from bitscout.study.training import FIDELITY_PARAMS, TRAIN_PARAMS

    for table, params in (("train", TRAIN_PARAMS), ("fidelity", FIDELITY_PARAMS)):
        both = {(p.python, p.toml) for p in params if p.python and p.toml}
        assert both == {(k, t) for name, k, t, _ in TRAIN_PARITY if name == table}


def test_training_tables_accept_and_default_alike():
    for table, python, toml in (
        ("train", {}, {}),
        ("train", {"epochs": 5, "lr": 0.1, "optimizer": "SGD", "num_samples": -1},
         {"max_epochs": 5, "learning_rate": 0.1, "optimizer": "sgd", "num_samples": -1}),
        ("fidelity", {}, {}),
        ("fidelity", {"pruner": "hyperband", "ptq_rung": False},
         {"pruner": "hyperband", "ptq_rung": False}),
    ):  # fmt: skip
        python_settings_, toml_settings = _training_doors(table, python, toml)
        assert python_settings_.train == toml_settings.train
        assert python_settings_.fidelity == toml_settings.fidelity
    # MASE's record-only keys belong to the TOML table
    python, _ = _training_doors("train", {"name": "accuracy"}, {"name": "accuracy"})
    assert isinstance(python, ConfigError) and python.key == "train.name"


@pytest.mark.parametrize("bad", ["tpee", "brutefroce", "Optunaa", "", 3])
def test_a_bad_strategy_gets_the_same_message_from_both_doors(bad):
    python, config = _python_error(strategy=bad), _toml_error(name=bad)
    assert (python.key, config.key) == ("strategy", "search.strategy.name")
    assert python.rule == config.rule and python.value == config.value


def test_the_cross_parameter_rules_say_the_same(tmp_path):
    for kwargs, setup in (
        ({"strategy": "tpe", "order": "shuffled"}, {"order": "shuffled"}),
        ({"strategy": "bruteforce", "warm_start": "greedy"}, {"warm_start": "greedy"}),
        ({"strategy": "bruteforce", "warm_start": "ilp"}, {"warm_start": "ilp"}),
        ({"strategy": "ilp", "warm_start": "ilp"}, {"warm_start": "ilp"}),
        ({"strategy": "tpe", "chunked": True}, {"chunked": True}),
        ({"n_jobs": 4, "n_jobs_limit": 3}, {"n_jobs": 4, "n_jobs_limit": 3}),
    ):
        name = kwargs.get("strategy", "tpe")
        python, config = _python_error(**kwargs), _toml_error(name=name, **setup)
        assert config.key.endswith(f".{python.key}")
        assert python.rule == config.rule and python.value == config.value


def test_ilp_and_its_warm_start_are_accepted_and_defaulted_alike():
    objective = parse_settings({"strategy": {"metrics": {"accuracy": {"scale": 1.0}}}}, 0).objective
    for kwargs, strategy in (
        ({"strategy": "ilp"}, {"name": "ilp"}),
        ({"strategy": "ILP", "trials": 30}, {"name": "ILP", "setup": {"n_trials": 30}}),
        ({"strategy": "tpe", "warm_start": "ilp"}, {"setup": {"sampler": "tpe", "warm_start": "ILP"}}),
    ):  # fmt: skip
        name = kwargs.pop("strategy")
        python = python_settings(name, objective, **kwargs)
        config = parse_settings(
            {"strategy": {**strategy, "metrics": {"accuracy": {"scale": 1.0}}}}, 0
        )
        assert python == config
    assert python_settings("ilp", objective).n_trials is None  # the strategy's own default


def _cli_error(tmp_path: Path, capsys, *flags: str) -> str:
    config = write_config(tmp_path / "c.toml", base_doc())
    outcome = run_cli(["search", str(config), "--out", str(tmp_path / "run"), *flags], capsys)
    assert outcome.rc == 2, outcome.err
    return outcome.err.strip().removeprefix("bitscout: error: ")


@pytest.mark.parametrize(
    ("kwarg", "flag", "python_value", "text"),
    [
        ("trials", "--trials", 0, "0"),
        ("seed", "--seed", -1, "-1"),
        ("seed", "--seed", 2**40, str(2**40)),
        ("strategy", "--strategy", "tpee", "tpee"),
        ("study", "--study", "", ""),
    ],
)
def test_a_flag_and_its_argument_say_the_same(tmp_path, capsys, kwarg, flag, python_value, text):
    python = _python_error(**{kwarg: python_value})
    line = _cli_error(tmp_path, capsys, flag, text)
    assert line == f"{flag}: {python.rule}, got {python.value!r}"
    assert str(python) == f"{kwarg}: {python.rule}, got {python.value!r}"


# --- the four defects: each of these failed before ---------------------------------------


def test_a_wrong_type_is_a_config_error_not_a_type_error():
    err = _python_error(timeout="soon")
    assert str(err) == "timeout: must be a number > 0, got 'soon'"


def test_a_negative_timeout_is_refused_not_zero_trials():
    assert str(_python_error(timeout=-1)) == "timeout: must be a number > 0, got -1"


def test_an_empty_study_name_is_refused():
    assert str(_python_error(study="")) == "study: must be a non-empty name, got ''"


@pytest.mark.parametrize("strategy", ["optuna", "TPE", "Tpe"])
def test_optuna_means_the_default_sampler_and_names_ignore_case(strategy):
    result = bitscout.search(MODEL, _data(), SPACE, strategy=strategy, trials=3, seed=0)
    assert (result.summary["strategy"], result.summary["sampler"]) == ("optuna", "tpe")
    assert len(result.trials) == 3


def _search(name: str, setup: dict) -> dict:
    return {"strategy": {"name": name, "setup": setup, "metrics": {"accuracy": {"scale": 1.0}}}}


def test_the_toml_takes_the_same_names():
    settings = parse_settings(_search("TPE", {}), 0)
    assert (settings.name, settings.sampler) == ("optuna", "tpe")
    settings = parse_settings(_search("optuna", {"sampler": "QMC"}), 0)
    assert (settings.name, settings.sampler) == ("optuna", "qmc")
    with pytest.raises(ConfigError, match="sampler: conflicts with the strategy 'tpe'"):
        parse_settings(_search("tpe", {"sampler": "random"}), 0)


def test_a_near_miss_suggests_the_name():
    assert "did you mean 'tpe'?" in str(_python_error(strategy="tpee"))
    assert "did you mean 'tpe'?" in str(_python_error(strategy="TPEE"))


BIG = _space([2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24])  # 144 candidates


def test_a_sampler_runs_the_same_default_trial_count_from_both_doors(tmp_path, capsys):
    python = bitscout.search(MODEL, _data(), BIG, strategy="random", seed=0)
    assert len(python.trials) == 100  # not the whole space of 144
    doc = edit(base_doc(), f"{SETUP}.n_trials", None)
    del doc["search"]["strategy"]["setup"]["n_trials"]
    layer = doc["search"]["search_space"]["seed"]["seq_blocks_2"]["config"]
    layer.update(data_in_width=[2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24],
                 weight_width=[2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24])  # fmt: skip
    config = write_config(tmp_path / "c.toml", doc)
    outcome = run_cli(["search", str(config), "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert outcome.rc == 0, outcome.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["space_size"] == 144 and summary["trials_run"] == 100


def test_a_sampler_instance_is_used_as_given():
    seeded = bitscout.search(MODEL, _data(), BIG, strategy="random", trials=8, seed=3)
    mine = bitscout.search(MODEL, _data(), BIG, strategy=optuna.samplers.RandomSampler(seed=3),
                           trials=8, seed=3)  # fmt: skip
    assert mine.summary["sampler"] == "RandomSampler"
    dims = list(seeded.best.config)
    assert mine.trials[dims].equals(seeded.trials[dims])
    err = _python_error(strategy=object())
    assert err.key == "strategy" and err.rule.startswith("unknown strategy; known: bruteforce")


@pytest.mark.parametrize(
    ("kwargs", "table"),
    [
        ({"objective": {"acuracy": 1.0}}, {"metrics": {"acuracy": {"scale": 1.0}}}),
        (
            {"objective": {"accuracy": float("inf")}},
            {"metrics": {"accuracy": {"scale": float("inf")}}},
        ),
        ({"objective": {}}, {"metrics": {}}),
        ({"constraints": ["accuracy >> 1"]}, {"constraints": {"accuracy": ">> 1"}}),
        ({"constraints": ["speed >= 1"]}, {"constraints": {"speed": ">= 1"}}),
    ],
)
def test_the_objective_and_constraints_say_the_same(kwargs, table):
    python = _python_error(**kwargs)
    strategy = {"setup": {}, "metrics": {"accuracy": {"scale": 1.0}}, **table}
    with pytest.raises(ConfigError) as caught:
        parse_settings({"strategy": strategy}, 0)
    assert python.rule == caught.value.rule and python.value == caught.value.value


def test_the_command_line_takes_a_sampler_as_the_strategy_in_any_case(tmp_path, capsys):
    config = write_config(tmp_path / "c.toml", edit(base_doc(), "search.strategy.name", "Random"))
    outcome = run_cli(["search", str(config), "--out", str(tmp_path / "a"), "--quiet"], capsys)
    assert outcome.rc == 0, outcome.err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert (summary["strategy"], summary["sampler"]) == ("optuna", "random")
    argv = ["search", str(config), "--out", str(tmp_path / "b"), "--strategy", "TPE", "--quiet"]
    assert run_cli(argv, capsys).rc == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert (summary["strategy"], summary["sampler"]) == ("optuna", "tpe")


@pytest.mark.parametrize(
    ("kwarg", "bad", "rule"),
    [
        ("objective", 3, "must be a dict metric -> scale (or -> direction) or a list of metric"),
        ("objective", "accuracy", "must be a dict metric -> scale"),
        ("constraints", 5, "must be a list of strings"),
        ("constraints", "accuracy >= 0.9", "must be a list of strings"),
        ("metrics", [1], "must be a dict name -> function"),
        ("loss_fn", 3, "must be a function (outputs, targets)"),
        ("max_data_bytes", "1GB", "must be an integer >= 1"),
        ("storage", 3, "must be a string"),
        ("out", 3, "must be a directory's path"),
        ("resume", "yes", "must be true or false"),
        ("overwrite", 1, "must be true or false"),
        ("show", "yes", "must be true or false"),
        ("quiet", None, None),  # None is no boolean, but it is the default: accepted
    ],
)
def test_python_only_arguments_of_the_wrong_type_are_config_errors(kwarg, bad, rule):
    if rule is None:
        assert bitscout.search(MODEL, _data(), SPACE, strategy="bruteforce", **{kwarg: bad})
        return
    err = _python_error(**{kwarg: bad})  # a ConfigError, not a TypeError or AttributeError
    assert err.key == kwarg and err.rule.startswith(rule) and err.value == bad
