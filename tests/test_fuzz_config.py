"""Fuzzing the config grammar: random TOML documents, mostly valid, some wrong in one or
several places (bad values, wrong types, unknown keys, broken syntax). Whatever the document,
the CLI must either run (exit 0) or fail with exit status 2 and one stderr line; a traceback,
another exit status or an exception escaping `main` is a bug.

The documents describe jsc-tiny or a small MLP on the `fake` data (the checkpoints trained
once per module fit them) with at most 4 trials, so a valid one runs in about half a second.
The examples are derandomized so the suite is reproducible; BITSCOUT_FUZZ_EXAMPLES=1000
explores further.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from cli_support import ERROR_PREFIX, base_doc, error_problems, run_cli, write_config
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st

from bitscout.cli import main
from bitscout.evaluate.metrics import METRICS
from bitscout.study.settings import SAMPLER_NAMES

EXAMPLES = int(os.environ.get("BITSCOUT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: an end-to-end run takes up to a second, so shrinking a failure takes
    # minutes; the failing document is printed whole instead (see `check`).
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_counter = itertools.count()


# How faulty one example is, shared by every draw of it: 0 gives a valid document (half the
# examples, so many really run a search), larger numbers one fault in that many draws.
FAULTS = st.shared(st.sampled_from([0, 0, 0, 40, 12, 3]), key="faults")


def mostly(valid: st.SearchStrategy, *invalid: st.SearchStrategy) -> st.SearchStrategy:
    """Always `valid` in a valid example; else, now and then, one of `invalid`."""
    return FAULTS.flatmap(
        lambda faults: valid if not faults else st.one_of(*[valid] * faults, *invalid)
    )


@st.composite
def rarely(draw: st.DrawFn, odds: int = 8) -> bool:
    """True about once in `odds` draws of a faulty example; never in a valid one."""
    faults = draw(FAULTS)
    return bool(faults) and draw(st.integers(0, odds)) == 0


JUNK = st.sampled_from([[], {}, "", "x", -1, 0, 1.5, True, math.inf, 2**70, ["NA", 3]])

# --- layer configs: the `[...seed.<layer>.config]` lists and `[passes.quantize]` scalars ---
WIDTHS = mostly(
    st.lists(st.integers(1, 16), min_size=1, max_size=3, unique=True),
    st.lists(st.integers(-2, 40), min_size=0, max_size=3),
    st.lists(st.sampled_from([4.0, True, "8", "NA"]), min_size=1, max_size=2),
    JUNK,
)
FRACS = mostly(
    st.lists(st.sampled_from(["NA", -8, -1, 0, 1, 3, 7, 12]), min_size=1, max_size=2, unique=True),
    st.lists(st.sampled_from([2.5, "na", "auto", 65, -65, False]), min_size=1, max_size=2),
    JUNK,
)
FORMAT_NAMES = mostly(
    st.sampled_from([["integer"], ["NA"], ["integer", "NA"]]),
    st.sampled_from([[], ["minifloat"], "integer", ["integer", "integer"]]),
)
ROUNDINGS = mostly(
    st.sampled_from([["half_even"], ["half_up", "floor"]]), st.just(["nearest"]), JUNK
)
OVERFLOWS = mostly(st.sampled_from([["saturate"], ["saturate", "wrap"]]), JUNK)


@st.composite
def layer_choices(draw: st.DrawFn) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if not draw(rarely()):
        cfg["name"] = draw(FORMAT_NAMES)
    for tensor in ("data_in", "weight", "bias"):
        if draw(st.booleans()):
            cfg[f"{tensor}_width"] = draw(WIDTHS)
        if draw(st.booleans()):
            cfg[f"{tensor}_frac_width"] = draw(FRACS)
    if draw(st.booleans()):
        cfg["rounding"] = draw(ROUNDINGS)
    if draw(st.booleans()):
        cfg["overflow"] = draw(OVERFLOWS)
    if draw(rarely()):
        cfg[draw(st.sampled_from(["weight_widht", "frac", "width"]))] = [4]
    return cfg


def scalar_plan(choices: dict[str, Any]) -> dict[str, Any]:
    """A `[passes.quantize]` layer config: the first choice of each list (junk stays junk)."""
    return {k: v[0] if isinstance(v, list) and v else v for k, v in choices.items()}


# The two models the checkpoints fit: jsc-tiny (one Linear layer) and a three-layer MLP.
MODELS: dict[str, dict[str, Any]] = {"jsc-tiny": {}, "mlp": {"hidden": [8, 8]}}
# The layer keys each model and `by` accept; some that they do not.
LAYER_KEYS = {
    ("jsc-tiny", "name"): ["seq_blocks_2", "seq_blocks.2", "linear"],
    ("mlp", "name"): ["seq_blocks_0", "seq_blocks_2", "seq_blocks.4", "linear"],
}
BAD_LAYER_KEYS = ["seq_blocks_3", "conv3d", "Linear", "seq_blocks_2"]


@st.composite
def seed_tables(draw: st.DrawFn, model: str, by: object) -> dict[str, Any]:
    known = LAYER_KEYS.get((model, by), ["linear"]) if isinstance(by, str) else ["linear"]
    key = mostly(st.sampled_from(known), st.sampled_from(BAD_LAYER_KEYS))
    keys = draw(st.lists(key, max_size=2, unique=True))
    if not draw(rarely()):
        keys.insert(0, "default")
    tables: dict[str, Any] = {}
    for name in keys:
        tables[name] = draw(JUNK) if draw(rarely()) else {"config": draw(layer_choices())}
    return tables


@st.composite
def search_space(draw: st.DrawFn, model: str) -> dict[str, Any]:
    by = draw(mostly(st.sampled_from(["name", "type"]), JUNK))
    space: dict[str, Any] = {
        "name": draw(mostly(st.just("graph/quantize/mixed_precision_ptq"), JUNK)),
        "setup": {"by": by},
        "seed": draw(mostly(seed_tables(model, by), JUNK)),
    }
    if draw(rarely()):
        space["setup"]["bye"] = "name"
    return space


# --- the strategy: setup, metrics, constraints ---------------------------------------------
METRIC_NAMES = sorted(METRICS)


@st.composite
def metric_table(draw: st.DrawFn) -> dict[str, Any]:
    name = mostly(st.sampled_from(METRIC_NAMES), st.just("acuracy"))
    smallest = 0 if draw(rarely()) else 1
    names = draw(st.lists(name, min_size=smallest, max_size=3, unique=True))
    table: dict[str, Any] = {}
    for metric in names:
        spec: dict[str, Any] = {}
        if draw(st.booleans()):
            spec["scale"] = draw(mostly(st.floats(-2, 2, allow_nan=False), JUNK))
        if draw(st.booleans()):
            spec["direction"] = draw(mostly(st.sampled_from(["maximize", "minimize"]), JUNK))
        table[metric] = draw(JUNK) if draw(rarely()) else spec
    return table


CONSTRAINT = mostly(
    st.builds(
        "{} {}".format,
        st.sampled_from([">=", "<=", ">", "<", "=="]),
        st.sampled_from(["0", "0.5", "1e9", "-3", ".25"]),
    ),
    st.sampled_from(["at least 0.9", ">=", "=> 0.9", "0.9", ">= nan"]),
    JUNK,
)
SETUP_OPTIONS = {
    "direction": mostly(st.sampled_from(["maximize", "minimize"]), JUNK),
    "seed": mostly(st.integers(0, 2**32 - 1), st.sampled_from([-1, 2**32, 2**40]), JUNK),
    "num_samples": mostly(st.integers(1, 80), JUNK),
    # 1e-9 is valid: a search out of time before its first trial must still end cleanly
    "timeout": mostly(st.sampled_from([60, 1e-9, math.inf]), st.sampled_from([0, -1]), JUNK),
    "n_jobs": mostly(st.integers(1, 2), JUNK),
}


# MASE's `sw_runner.basic_train` keys: a short training (at most 2 epochs of a few hundred
# rows), or now and then a bad value (1e30 may make the loss NaN: one line too)
BASIC_TRAIN = {
    "max_epochs": mostly(st.integers(1, 2), st.sampled_from([0, -1, "2", 1.5])),
    "learning_rate": mostly(
        st.sampled_from([1e-3, 1e-2]), st.sampled_from([0, -1e-3, math.inf, 1e30])
    ),
    "optimizer": mostly(st.sampled_from(["adam", "adamw", "sgd", "ADAM"]), st.just("adma"), JUNK),
    "weight_decay": mostly(st.sampled_from([0.0, 1e-4]), st.sampled_from([-1, math.nan])),
    "batch_size": mostly(st.sampled_from([16, 64]), st.sampled_from([0, "64"])),
    "lr_scheduler": mostly(
        st.sampled_from(["linear", "cosine", "constant", "constant_with_warmup"]), JUNK
    ),
    "num_warmup_steps": mostly(st.integers(0, 3), st.just(-1)),
    "gradient_accumulation_steps": mostly(st.integers(1, 2), st.just(0)),
    "num_samples": mostly(st.sampled_from([-1, 100, 1000000]), st.sampled_from([0, -2])),
    "name": mostly(st.just("accuracy"), st.just(3)),
    "data_loader": mostly(st.just("train_dataloader"), st.just("val_dataloader")),
}


@st.composite
def basic_train(draw: st.DrawFn) -> dict[str, Any]:
    table = {k: draw(v) for k, v in BASIC_TRAIN.items() if draw(st.integers(0, 2)) == 0}
    if draw(rarely()):
        table["max_epoch"] = 2
    return table


@st.composite
def fidelity(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "pruner": draw(mostly(st.sampled_from(["successive_halving", "hyperband"]), JUNK)),
        "min_epochs": draw(mostly(st.just(1), st.just(0))),
        "reduction_factor": draw(mostly(st.just(2), st.just(1))),
    }


@st.composite
def strategy(draw: st.DrawFn) -> dict[str, Any]:
    setup: dict[str, Any] = {
        # Always a small budget: without n_trials brute force would enumerate the space.
        "n_trials": draw(mostly(st.integers(1, 4), st.sampled_from([0, -2, "3", 2.5]))),
        "sampler": draw(mostly(st.sampled_from(SAMPLER_NAMES), st.just("cmaes"), JUNK)),
        "sum_scaled_metrics": draw(mostly(st.booleans(), JUNK)),
        # latency is the one slow metric: a single short measurement when it is asked for
        "latency_repeats": 1,
        "latency_warmup": 0,
        "latency_budget_s": 0.01,
    }
    for key, values in SETUP_OPTIONS.items():
        if draw(st.integers(0, 3)) == 0:
            setup[key] = draw(values)
    if draw(rarely()):
        setup["n_trial"] = 3
    table: dict[str, Any] = {
        "name": draw(mostly(st.sampled_from(["optuna", "bruteforce"]), st.just("genetic"), JUNK)),
        # false: quantization-aware training of every candidate, a quarter of the time
        "eval_mode": draw(mostly(st.sampled_from([True, True, True, False]), JUNK)),
        "setup": draw(JUNK) if draw(rarely()) else setup,
        "metrics": draw(mostly(metric_table(), JUNK)),
    }
    if table["eval_mode"] is False or draw(rarely()):
        table["sw_runner"] = {"basic_train": draw(mostly(basic_train(), JUNK))}
    if table["eval_mode"] is False and draw(st.integers(0, 5)) == 0:
        table["fidelity"] = draw(mostly(fidelity(), JUNK))
    if draw(st.integers(0, 3)) == 0:
        names = mostly(st.sampled_from(METRIC_NAMES), st.just("speed"))
        table["constraints"] = draw(st.dictionaries(names, CONSTRAINT, max_size=2))
    return table


# --- the whole document, then its text ---------------------------------------------------
@st.composite
def dataset_options(draw: st.DrawFn) -> dict[str, Any]:
    options: dict[str, Any] = {
        "num_samples": draw(mostly(st.integers(20, 300), st.sampled_from([0, 2, 3, "x"]))),
        "num_features": draw(mostly(st.just(16), st.sampled_from([10, 0]))),
        "num_classes": 5,
    }
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(["val_fraction", "test_fraction"]))
        bad = st.sampled_from([0, 1, 0.9, 1.5, -0.1, "x"])
        options[key] = draw(mostly(st.floats(0.05, 0.4), bad))
    return options


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    doc = base_doc()
    doc["model"] = draw(mostly(st.sampled_from(sorted(MODELS)), st.sampled_from(["cnn", "resnet"])))
    if MODELS.get(doc["model"]):
        doc["model_options"] = dict(MODELS[doc["model"]])
    doc["dataset"] = draw(mostly(st.just("fake"), st.sampled_from(["digits", "jsc", "imagenet"])))
    if doc["dataset"] == "jsc":  # never a download: a missing local file instead
        doc["dataset_path"] = "missing.csv"
    doc["dataset_options"] = draw(dataset_options())
    doc["seed"] = draw(mostly(st.integers(0, 2**32 - 1), st.sampled_from([-1, 2**40, "1"])))
    for key in ("batch_size", "max_epochs", "learning_rate"):
        if draw(rarely()):
            doc[key] = draw(JUNK)
    space = draw(search_space(doc["model"]))
    doc["search"] = {"search_space": space, "strategy": draw(strategy())}
    if draw(st.booleans()):  # `quantize` needs it; the other commands only validate it
        by = draw(mostly(st.sampled_from(["name", "type"]), JUNK))
        layer = draw(mostly(st.sampled_from(["default", "linear"]), st.just("seq_blocks_3")))
        plan = {"config": scalar_plan(draw(layer_choices()))}
        doc["passes"] = {"quantize": {"by": by, layer: plan}}
    if draw(rarely()):
        doc[draw(st.sampled_from(["modle", "n_trials", "dataset_option"]))] = 1
    return doc


BROKEN = ["[", '"', " = ", "]]", "\x00", "{", "\n[search]\n", "'''", "\xff"]


@st.composite
def config_texts(draw: st.DrawFn) -> tuple[str, str]:
    """The document as TOML, now and then with a syntax error (or a lucky valid edit), and
    the model whose checkpoint to load."""
    doc = draw(documents())
    text = tomli_w.dumps(doc)
    if draw(rarely(4)):
        cut = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(BROKEN))
        text = text[:cut] + junk + text[cut + draw(st.integers(0, 5)) :]
    return text, doc["model"] if doc["model"] in MODELS else "jsc-tiny"


FLAGS = st.lists(  # optional: the config's own values are valid too
    st.one_of(
        st.tuples(st.just("--trials"), mostly(st.integers(1, 4), st.sampled_from([0, -3]))),
        st.tuples(st.just("--seed"), mostly(st.integers(0, 99), st.sampled_from([-1, 2**40]))),
        st.tuples(st.just("--sampler"), mostly(st.sampled_from(SAMPLER_NAMES), st.just("nope"))),
        st.tuples(
            st.just("--strategy"), mostly(st.sampled_from(["bruteforce", "optuna"]), st.just("no"))
        ),
    ),
    max_size=2,
).map(lambda pairs: [str(x) for pair in pairs for x in pair])


# --- fixtures and the checks --------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A float checkpoint of each model in MODELS, trained on the base config's data."""
    root = tmp_path_factory.mktemp("fuzz")
    paths = {}
    for model, options in MODELS.items():
        doc = base_doc() | {"model": model, "model_options": options}
        config = write_config(root / f"{model}.toml", doc)
        assert main(["train", str(config), "--out", str(root / model)]) == 0
        paths[model] = root / model / "model.pt"
    return paths


def fresh_dir(tmp_path: Path) -> Path:
    """A new directory per example (function-scoped tmp_path is shared by all of them)."""
    path = tmp_path / f"ex{next(_counter)}"
    path.mkdir()
    return path


def check(argv: list[str], text: str, capsys: Any) -> int | None:
    """Run the CLI; fail with the document when the outcome is neither success nor a clean
    one-line exit 2."""
    note(text)
    outcome = run_cli(argv, capsys)
    event(f"exit {outcome.rc}")  # --hypothesis-show-statistics: how many examples ran
    if outcome.rc == 0 and outcome.escaped is None and "Traceback" not in outcome.err:
        return 0
    problems = error_problems(outcome)
    assert not problems, "\n".join([*problems, f"argv: {argv}", f"stderr: {outcome.err}", text])
    assert outcome.err.startswith(ERROR_PREFIX)
    return outcome.rc


@FUZZ
@given(doc=config_texts(), flags=FLAGS)
def test_search_runs_or_fails_in_one_line(
    doc: tuple[str, str],
    flags: list[str],
    ckpts: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text, model = doc
    work = fresh_dir(tmp_path)
    config = work / "fuzz.toml"
    config.write_text(text, encoding="utf-8")
    load = ["--load", str(ckpts[model])]
    argv = ["search", str(config), "--out", str(work / "out"), *load, *flags]
    if check(argv, text, capsys) == 0:
        assert (work / "out" / "summary.json").is_file()


@FUZZ
@given(doc=config_texts(), command=st.sampled_from(["space", "quantize"]))
def test_space_and_quantize_run_or_fail_in_one_line(
    doc: tuple[str, str],
    command: str,
    ckpts: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text, model = doc
    config = fresh_dir(tmp_path) / "fuzz.toml"
    config.write_text(text, encoding="utf-8")
    load = ["--load", str(ckpts[model])] if command == "quantize" else []
    argv = [command, str(config), *load]
    check(argv, text, capsys)
