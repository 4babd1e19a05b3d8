"""`[search.strategy]`: which strategy, how many trials, the objective, evaluation options."""

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bitscout._core.validate import SEED_MAX, check_keys, suggest
from bitscout.errors import ConfigError
from bitscout.objective import Objective, parse_objective

STRATEGY_NAMES = ("bruteforce", "optuna", "greedy")
# bruteforce's order; "reversed" is index order with every dimension's choices listed the
# other way round (the index's mixed-radix digits each become n - 1 - digit)
ORDERS = ("index", "reversed", "shuffled")
WARM_STARTS = ("greedy",)  # what an Optuna sampler may start from
SAMPLER_NAMES = ("tpe", "random", "nsgaii", "nsgaiii", "qmc", "gp", "grid", "bruteforce")
STRATEGY_KEYS = ("name", "eval_mode", "setup", "metrics", "constraints", "sw_runner", "hw_runner")
SETUP_KEYS = (
    "n_jobs", "n_trials", "timeout", "sampler", "sum_scaled_metrics", "direction", "seed",
    "num_samples", "latency_repeats", "latency_warmup", "latency_budget_s", "latency_shared",
    "n_jobs_limit", "order", "warm_start", "chunked",
)  # fmt: skip
KEY = "search.strategy"
# Each extra worker is a process holding PyTorch (a few hundred MB): more than a couple per
# core only adds memory pressure, and a typo such as 100000 would exhaust the machine.
JOBS_PER_CPU = 2


@dataclass(frozen=True)
class StrategySettings:
    name: str
    sampler: str
    objective: Objective
    n_trials: int | None = None  # total trials in the study; None: the whole space
    timeout: float | None = None
    n_jobs: int = 1
    seed: int = 0
    num_samples: int | None = None
    latency_repeats: int = 5
    latency_warmup: int = 1
    latency_budget_s: float = 1.0
    latency_shared: bool = True  # one measurement per distinct computation, not per candidate
    order: str = "index"  # bruteforce: index order or a seeded shuffle
    warm_start: str | None = None  # optuna: queue this strategy's trajectory first
    order_seed: int | None = None  # the shuffle's seed when not `seed` (extra workers)
    chunked: bool | None = None  # bruteforce: one trial per chunk (None: by the space's size)

    @property
    def shuffle_seed(self) -> int:
        """What seeds the shuffled order: every worker of a study walks the same one."""
        return self.seed if self.order_seed is None else self.order_seed


def _table(raw: Mapping[str, Any], name: str, key: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}.{name}", "must be a table", value)
    return value


def _int(
    raw: Mapping[str, Any], name: str, key: str, low: int, high: int | None = None
) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(f"{key}.{name}", f"must be an integer {bound}", value)
    return value


def _float(raw: Mapping[str, Any], name: str, key: str, *, positive: bool = False) -> float | None:
    """A number >= 0 (> 0 with `positive`); inf is allowed: no limit."""
    value = raw.get(name)
    if value is None:
        return None
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float's range is no limit, like inf
            number = math.inf
    if not (number > 0 if positive else number >= 0):
        raise ConfigError(f"{key}.{name}", f"must be a number {'>' if positive else '>='} 0", value)
    return number


def _bool(raw: Mapping[str, Any], name: str, key: str) -> bool:
    """A true/false switch that defaults to true."""
    value = raw.get(name, True)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}.{name}", "must be true or false", value)
    return value


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _choice(
    raw: Mapping[str, Any], name: str, allowed: tuple, default: Any, key: str | None
) -> Any:
    """`raw[name]` if it is one of `allowed`; `key` None names the field alone (Python API)."""
    value = raw.get(name, default)
    if value not in allowed:
        hint = suggest(value, allowed) if isinstance(value, str) else ""
        rule = f"unknown value{hint}; known: {', '.join(map(str, allowed))}"
        raise ConfigError(f"{key}.{name}" if key else name, rule, value)
    return value


def cpu_count() -> int:
    """The CPUs this process may run on (a container or taskset may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_n_jobs(n_jobs: int, key: str, limit: int | None = None) -> int:
    """`n_jobs` refused above `limit` (default: JOBS_PER_CPU per CPU of this machine)."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ConfigError(key, "must be an integer >= 1", n_jobs)
    if limit is not None and n_jobs > limit:
        raise ConfigError(key, f"must be at most n_jobs_limit = {limit}", n_jobs)
    cpus = cpu_count()
    if limit is None and n_jobs > JOBS_PER_CPU * cpus:
        rule = (
            f"must be at most {JOBS_PER_CPU * cpus} on this machine ({cpus} CPUs x "
            f"{JOBS_PER_CPU}); set n_jobs_limit to allow more"
        )
        raise ConfigError(key, rule, n_jobs)
    return n_jobs


def _n_jobs(setup: Mapping[str, Any], key: str) -> int:
    n_jobs = _default(_int(setup, "n_jobs", key, 1), 1)
    return check_n_jobs(n_jobs, f"{key}.n_jobs", _int(setup, "n_jobs_limit", key, 1))


def _num_samples(strategy: Mapping[str, Any], setup: Mapping[str, Any]) -> int | None:
    """`setup.num_samples`, else MASE's `sw_runner.basic_evaluation.num_samples`."""
    runner = _table(_table(strategy, "sw_runner", KEY), "basic_evaluation", f"{KEY}.sw_runner")
    if "num_samples" in setup:
        return _int(setup, "num_samples", f"{KEY}.setup", 1)
    return _int(runner, "num_samples", f"{KEY}.sw_runner.basic_evaluation", 1)


def parse_settings(search: Mapping[str, Any], default_seed: int) -> StrategySettings:
    """Validate `[search.strategy]`; `default_seed` (the config's `seed`) seeds the strategy
    unless `setup.seed` is given."""
    strategy = _table(search, "strategy", "search")
    check_keys(strategy, STRATEGY_KEYS, KEY)
    name = _choice(strategy, "name", STRATEGY_NAMES, "optuna", KEY)
    if strategy.get("eval_mode", True) is not True:
        raise ConfigError(
            f"{KEY}.eval_mode",
            "must be true: bitscout searches post-training quantization (no fine-tuning)",
            strategy.get("eval_mode"),
        )
    setup = _table(strategy, "setup", KEY)
    check_keys(setup, SETUP_KEYS, f"{KEY}.setup")
    single = _bool(setup, "sum_scaled_metrics", f"{KEY}.setup")
    objective = parse_objective(
        _table(strategy, "metrics", KEY),
        _table(strategy, "constraints", KEY),
        single=single,
        direction=setup.get("direction", "maximize"),
        key=KEY,
    )
    key = f"{KEY}.setup"
    return StrategySettings(
        name=name,
        sampler=_choice(setup, "sampler", SAMPLER_NAMES, "tpe", key),
        objective=objective,
        n_trials=_int(setup, "n_trials", key, 1),
        timeout=_float(setup, "timeout", key, positive=True),  # 0 would run no trial at all
        n_jobs=_n_jobs(setup, key),
        seed=_default(_int(setup, "seed", key, 0, SEED_MAX), default_seed),
        num_samples=_num_samples(strategy, setup),
        latency_repeats=_default(_int(setup, "latency_repeats", key, 1), 5),
        latency_warmup=_default(_int(setup, "latency_warmup", key, 0), 1),
        latency_budget_s=_default(_float(setup, "latency_budget_s", key), 1.0),
        latency_shared=_bool(setup, "latency_shared", key),
        **parse_starts(setup, name, key),
    )


def parse_starts(setup: Mapping[str, Any], name: str, key: str | None) -> dict[str, Any]:
    """`order` (bruteforce only) and `warm_start` (optuna only): where the search starts.
    `key` prefixes the names in errors (None: the names alone, as the Python API has them)."""
    order = _choice(setup, "order", ORDERS, "index", key)
    warm = setup.get("warm_start")
    if warm is not None:
        warm = _choice(setup, "warm_start", WARM_STARTS, None, key)
    chunked = setup.get("chunked")
    if chunked is not None and not isinstance(chunked, bool):
        raise ConfigError(f"{key}.chunked" if key else "chunked", "must be true or false", chunked)
    brute, optuna = "applies to the bruteforce strategy only", "applies to Optuna's samplers only"
    for field, value, fits, rule in (
        ("order", order, order == "index" or name == "bruteforce", brute),
        ("warm_start", warm, warm is None or name == "optuna", optuna),
        ("chunked", chunked, not chunked or name == "bruteforce", brute),
    ):
        if not fits:
            raise ConfigError(f"{key}.{field}" if key else field, rule, value)
    return {"order": order, "warm_start": warm, "chunked": chunked}
