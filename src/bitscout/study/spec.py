"""The search's parameters, each declared once: its Python name, its TOML key, its rule and
its default. `bitscout.search(...)` and `bitscout search CONFIG` both check their input here,
so the two doors accept, refuse and default alike and say it in the same words; only the key
differs (the argument's name in Python, `search.strategy.setup.<key>` in TOML, the flag on the
command line). A refusal is `ConfigError(key, rule, value)`: `trials: must be an integer >= 1,
got 0`, as scikit-learn's parameter validation states the rule and echoes the value."""

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bitscout._core.validate import SEED_MAX, unknown
from bitscout.errors import ConfigError
from bitscout.evaluate.audit import AUDIT_RATE

# Every strategy name, in one place. Ours first; "optuna" is Optuna with `sampler` (TPE by
# default); a sampler's own name is Optuna with that sampler.
OURS = ("bruteforce", "greedy", "ilp")
SAMPLER_NAMES = ("tpe", "random", "nsgaii", "nsgaiii", "qmc", "gp", "grid", "bruteforce")
STRATEGY_NAMES = ("bruteforce", "optuna", "greedy", "ilp")  # the TOML's `name`, as MASE has it
STRATEGIES = (*STRATEGY_NAMES, *(s for s in SAMPLER_NAMES if s not in OURS))
DEFAULT_SAMPLER = "tpe"
# Trials a sampler runs when `trials`/`n_trials` is not given (it stops sooner once every
# candidate of the space has been evaluated); ours default to the whole space or walk.
DEFAULT_SAMPLER_TRIALS = 100
# NSGA-II/III's first generation is this many random trials (Optuna's default population).
POPULATION = 50
# bruteforce's order; "reversed" is index order with every dimension's choices listed the
# other way round (the index's mixed-radix digits each become n - 1 - digit)
ORDERS = ("index", "reversed", "shuffled")
WARM_STARTS = ("greedy", "ilp")  # what an Optuna sampler may start from


class Refused(ValueError):
    """A value breaks a parameter's rule; the caller adds the key and the value."""


Check = Callable[[Any], Any]  # the value as used (normalized), or Refused(rule)


def integer(low: int, high: int | None = None) -> Check:
    """An integer >= low (<= high); the upper bound is shown only when it is hit."""

    def check(value: Any) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and low <= value and (high is None or value <= high):
            return int(value)
        bound = f"in {low}..{high}" if ok and high is not None and value > high else f">= {low}"
        raise Refused(f"must be an integer {bound}")

    return check


def number(*, positive: bool) -> Check:
    """A number > 0 (`positive`) or >= 0; inf is allowed (no limit), and so is an integer
    beyond float's range (TOML allows them), read as inf."""

    def check(value: Any) -> float:
        found = math.nan
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                found = float(value)
            except OverflowError:
                found = math.inf
        if found > 0 if positive else found >= 0:
            return found
        raise Refused(f"must be a number {'>' if positive else '>='} 0")

    return check


def fraction(value: Any) -> float:
    """A number in 0..1 (a share of something)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise Refused("must be a number in 0..1")


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Refused("must be true or false")
    return value


def name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise Refused("must be a non-empty name")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise Refused("must be a string")
    return value


def path(value: Any) -> Any:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise Refused("must be a directory's path (a str or a Path)")
    return value


def result_path(value: Any) -> str:
    """A sensitivity result: its file or the directory holding it."""
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise Refused("must be a path (a str or a Path): sensitivity_joint.json or its folder")
    return str(value)


def kind(test: Callable[[Any], bool], rule: str) -> Check:
    """A value `test` accepts, as it is (what it holds is checked where it is read)."""

    def check(value: Any) -> Any:
        if not test(value):
            raise Refused(rule)
        return value

    return check


def _names(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def choice(noun: str, known: tuple[str, ...]) -> Check:
    """One of `known`, in any letter case; a near miss suggests the closest."""

    def check(value: Any) -> str:
        if isinstance(value, str) and value.lower() in known:
            return value.lower()
        raise Refused(unknown(noun, value.lower() if isinstance(value, str) else value, known))

    return check


def optional(check: Check) -> Check:
    """`check`, or None (the parameter's default)."""
    return lambda value: None if value is None else check(value)


@dataclass(frozen=True)
class Param:
    """One search parameter: its Python argument (None: TOML only), its key under
    `search.strategy.setup` (None: Python only), its rule and its default."""

    python: str | None
    toml: str | None
    check: Check
    default: Any


def is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


# Python's own arguments: their shape here, what they hold where they are read
OBJECTIVE = kind(
    lambda v: is_mapping(v) or _names(v),
    "must be a dict metric -> scale (or -> direction) or a list of metric names",
)
CONSTRAINTS = kind(_names, 'must be a list of strings such as "accuracy >= 0.9"')
LOSS_FN = kind(callable, "must be a function (outputs, targets) -> the batch's mean loss")

PARAMS: tuple[Param, ...] = (
    Param("strategy", None, choice("strategy", STRATEGIES), DEFAULT_SAMPLER),
    Param(None, "sampler", choice("sampler", SAMPLER_NAMES), None),
    Param("trials", "n_trials", optional(integer(1)), None),
    Param("seed", "seed", integer(0, SEED_MAX), 0),
    Param("timeout", "timeout", optional(number(positive=True)), None),  # 0: no trial at all
    Param("n_jobs", "n_jobs", integer(1), 1),
    Param("n_jobs_limit", "n_jobs_limit", optional(integer(1)), None),
    Param("order", "order", choice("value", ORDERS), "index"),
    Param("warm_start", "warm_start", optional(choice("value", WARM_STARTS)), None),
    Param("chunked", "chunked", optional(boolean), None),
    # ilp (and warm_start = "ilp"): a joint sensitivity result whose probes are not evaluated again
    Param("sensitivity", "sensitivity", optional(result_path), None),
    Param(None, "num_samples", optional(integer(1)), None),
    Param("latency_repeats", "latency_repeats", integer(1), 5),
    Param("latency_warmup", "latency_warmup", integer(0), 1),
    Param("latency_budget_s", "latency_budget_s", number(positive=False), 1.0),
    Param("latency_shared", "latency_shared", boolean, True),
    # the share of the fast engine's candidates re-derived by the plain path (0: none)
    Param("audit_rate", "audit_rate", fraction, AUDIT_RATE),
    Param(None, "sum_scaled_metrics", boolean, True),
    Param(None, "direction", lambda value: value, None),  # checked by the objective's parser
    Param("study", None, name, "bitscout"),
    Param("storage", None, optional(text), None),
    Param("out", None, optional(path), None),
    Param("resume", None, optional(boolean), None),
    Param("overwrite", None, boolean, False),
    Param("objective", None, optional(OBJECTIVE), None),
    Param("constraints", None, CONSTRAINTS, ()),
    Param("metrics", None, optional(kind(is_mapping, "must be a dict name -> function")), None),
    Param("loss_fn", None, optional(LOSS_FN), None),
    Param("max_data_bytes", None, integer(1), None),
    Param("train", None, optional(kind(is_mapping, "must be a dict of training settings")), None),
    Param(
        "fidelity",
        None,
        optional(
            kind(
                lambda v: isinstance(v, bool) or is_mapping(v),
                "must be True or a dict of ladder settings",
            )
        ),
        None,
    ),
    Param("show", None, boolean, False),
    Param("quiet", None, boolean, False),
    Param("verbose", None, boolean, False),
)
BY_PYTHON = {p.python: p for p in PARAMS if p.python}
BY_TOML = {p.toml: p for p in PARAMS if p.toml}
SETUP_KEYS = tuple(BY_TOML)


def check(param: Param, value: Any, key: str) -> Any:
    """`value` as the search uses it, or ConfigError naming `key`, the rule and the value."""
    if value is None:
        return param.default
    try:
        return param.check(value)
    except Refused as err:
        raise ConfigError(key, str(err), value) from None


def python_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments checked, each error naming the argument."""
    return {k: check(BY_PYTHON[k], v, k) for k, v in values.items()}


def toml_values(setup: Mapping[str, Any], key: str) -> dict[str, Any]:
    """`[search.strategy.setup]` checked (its keys already known), by Python name where there
    is one; errors name `key.<toml key>`."""
    found = {}
    for toml, value in setup.items():
        param = BY_TOML[toml]
        found[param.python or toml] = check(param, value, f"{key}.{toml}")
    return found


def strategy_pair(strategy: str, sampler: str | None, key: str) -> tuple[str, str]:
    """The strategy to run and its sampler: "optuna" runs `sampler`, a sampler's name is Optuna
    with it, ours keep `sampler` only for the record. `key` names the sampler in a conflict."""
    if strategy in OURS or strategy == "optuna":
        return strategy, sampler or DEFAULT_SAMPLER
    if sampler is not None and sampler != strategy:
        raise ConfigError(key, f"conflicts with the strategy {strategy!r}", sampler)
    return "optuna", strategy


def trial_count(strategy: str, n_trials: int | None) -> int | None:
    """The trials a search runs: as given, else DEFAULT_SAMPLER_TRIALS for a sampler, else
    None (ours: the whole space, or the whole walk)."""
    if n_trials is None and strategy == "optuna":
        return DEFAULT_SAMPLER_TRIALS
    return n_trials
