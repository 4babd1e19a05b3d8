"""A search's validated settings (`StrategySettings`), built from `[search.strategy]` or from
`bitscout.search`'s keyword arguments. The rules and defaults are `spec`'s, declared once;
this module maps each door's layout onto them and checks what concerns several parameters."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bitscout._core.processes import cpu_count
from bitscout._core.validate import check_keys
from bitscout.errors import ConfigError
from bitscout.evaluate.audit import AUDIT_RATE
from bitscout.objective import Objective, parse_objective
from bitscout.study.spec import (
    BY_PYTHON,
    POPULATION,
    SAMPLER_NAMES,
    SETUP_KEYS,
    STRATEGIES,
    STRATEGY_NAMES,
    check,
    python_values,
    strategy_pair,
    toml_values,
)

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from bitscout.evaluate.qat import TrainSettings
    from bitscout.study.training import Fidelity

__all__ = ["SAMPLER_NAMES", "STRATEGIES", "STRATEGY_NAMES", "StrategySettings", "parse_settings"]

STRATEGY_KEYS = ("name", "eval_mode", "setup", "metrics", "constraints", "sw_runner", "hw_runner",
                 "fidelity")  # fmt: skip
KEY = "search.strategy"
# Each extra worker is a process holding PyTorch (a few hundred MB): more than a couple per
# core only adds memory pressure, and a typo such as 100000 would exhaust the machine.
JOBS_PER_CPU = 2
Keyer = Callable[[str], str]  # a parameter's Python name -> the key its errors name


@dataclass(frozen=True)
class StrategySettings:
    name: str
    sampler: str
    objective: Objective
    n_trials: int | None = None  # total trials in the study; None: the default (spec)
    timeout: float | None = None
    n_jobs: int = 1
    seed: int = 0
    num_samples: int | None = None
    latency_repeats: int = 5
    latency_warmup: int = 1
    latency_budget_s: float = 1.0
    latency_shared: bool = True  # one measurement per distinct computation, not per candidate
    audit_rate: float = AUDIT_RATE  # the fast engine's candidates re-derived by the plain path
    order: str = "index"  # bruteforce: index order or a seeded shuffle
    warm_start: str | None = None  # optuna: queue this strategy's trajectory first
    order_seed: int | None = None  # the shuffle's seed when not `seed` (extra workers)
    chunked: bool | None = None  # bruteforce: one trial per chunk (None: by the space's size)
    sensitivity: str | None = None  # ilp: a joint sensitivity result to reuse (None: the run's)
    # optuna: the user's own sampler, used as given (`sampler` holds its class name)
    sampler_object: "BaseSampler | None" = None
    # quantization-aware training of every candidate (None: post-training quantization), its
    # seed set by the search (`seed` before workers change theirs)
    train: "TrainSettings | None" = None
    fidelity: "Fidelity | None" = None  # the multi-fidelity ladder over training epochs

    @property
    def shuffle_seed(self) -> int:
        """What seeds the shuffled order: every worker of a study walks the same one."""
        return self.seed if self.order_seed is None else self.order_seed


def _table(raw: Mapping[str, Any], name: str, key: str) -> Mapping[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}.{name}", "must be a table", value)
    return value


def check_n_jobs(n_jobs: int, key: str, limit: int | None = None) -> int:
    """`n_jobs` (already an integer >= 1) refused above `limit` (default: JOBS_PER_CPU per CPU
    of this machine)."""
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


def check_strategy_fields(name: str, values: Mapping[str, Any], key: Keyer) -> None:
    """`order` and `chunked` belong to the brute force, `warm_start` to Optuna's samplers,
    `sensitivity` to what runs the ILP's probes."""
    brute, optuna = "applies to the bruteforce strategy only", "applies to Optuna's samplers only"
    order, warm, chunked = values["order"], values["warm_start"], values["chunked"]
    sens, ilp = values["sensitivity"], 'applies to strategy "ilp" and warm_start = "ilp" only'
    for field, value, fits, rule in (
        ("order", order, order == "index" or name == "bruteforce", brute),
        ("warm_start", warm, warm is None or name == "optuna", optuna),
        ("chunked", chunked, not chunked or name == "bruteforce", brute),
        ("sensitivity", sens, sens is None or name == "ilp" or warm == "ilp", ilp),
    ):
        if not fits:
            raise ConfigError(key(field), rule, value)


def build_settings(
    values: Mapping[str, Any], objective: Objective, key: Keyer, **extra: Any
) -> StrategySettings:
    """Settings from checked values (by Python name; absent ones take their default)."""
    given = {name: values.get(name, param.default) for name, param in BY_PYTHON.items()}
    name, sampler = strategy_pair(given["strategy"], values.get("sampler"), key("sampler"))
    check_strategy_fields(name, given, key)
    fields = ("timeout", "seed", "order", "warm_start", "chunked", "sensitivity",
              "latency_repeats", "latency_warmup", "latency_budget_s", "latency_shared",
              "audit_rate")  # fmt: skip
    return StrategySettings(
        name=name,
        sampler=sampler,
        objective=objective,
        n_trials=given["trials"],
        n_jobs=check_n_jobs(given["n_jobs"], key("n_jobs"), given["n_jobs_limit"]),
        **{f: given[f] for f in fields},
        **extra,
    )


def _num_samples(strategy: Mapping[str, Any], setup: Mapping[str, Any]) -> int | None:
    """`setup.num_samples`, else MASE's `sw_runner.basic_evaluation.num_samples`."""
    runner = _table(_table(strategy, "sw_runner", KEY), "basic_evaluation", f"{KEY}.sw_runner")
    if "num_samples" in setup:
        return setup["num_samples"]
    param = {"num_samples": runner.get("num_samples")}
    return toml_values(param, f"{KEY}.sw_runner.basic_evaluation")["num_samples"]


def toml_key(name: str) -> str:
    """The TOML key of a parameter named by its Python name (or its TOML key)."""
    param = BY_PYTHON.get(name)
    if name == "strategy":
        return f"{KEY}.name"
    return f"{KEY}.setup.{param.toml if param and param.toml else name}"


def parse_settings(
    search: Mapping[str, Any], default_seed: int, batch_size: int | None = None
) -> StrategySettings:
    """Validate `[search.strategy]`; `default_seed` (the config's `seed`) seeds the strategy
    unless `setup.seed` is given. `n_trials` absent stays None here: the search gives it the
    spec's default for its strategy (`spec.trial_count`: 100 for a sampler), as it does for
    `bitscout.search(trials=None)`, so flags that change the strategy change that too.
    `eval_mode = false` trains every candidate (`sw_runner.basic_train`; `batch_size`, the
    config's, unless that table gives one)."""
    strategy = _table(search, "strategy", "search")
    check_keys(strategy, STRATEGY_KEYS, KEY)
    name = check(BY_PYTHON["strategy"], strategy.get("name", "optuna"), f"{KEY}.name")
    setup = _table(strategy, "setup", KEY)
    check_keys(setup, SETUP_KEYS, f"{KEY}.setup")
    values = toml_values(setup, f"{KEY}.setup")
    objective = parse_objective(
        _table(strategy, "metrics", KEY),
        _table(strategy, "constraints", KEY),
        single=values.get("sum_scaled_metrics", True),
        direction=setup.get("direction", "maximize"),
        key=KEY,
    )
    values = {**values, "strategy": name, "seed": values.get("seed", default_seed)}
    training = _toml_training(strategy, batch_size)
    settings = build_settings(values, objective, toml_key,
                              num_samples=_num_samples(strategy, values), **training)  # fmt: skip
    check_training(settings, f"{KEY}.fidelity", f"{KEY}.eval_mode")
    return settings


def _toml_training(strategy: Mapping[str, Any], batch_size: int | None) -> dict[str, Any]:
    """`eval_mode = false`: the `sw_runner.basic_train` table's training (its defaults when
    absent), and `[search.strategy.fidelity]`'s ladder."""
    from bitscout.study.training import fidelity_settings, train_settings

    eval_mode = strategy.get("eval_mode", True)
    if not isinstance(eval_mode, bool):
        raise ConfigError(f"{KEY}.eval_mode", "must be true or false", eval_mode)
    found: dict[str, Any] = {}
    if not eval_mode:
        runner = _table(_table(strategy, "sw_runner", KEY), "basic_train", f"{KEY}.sw_runner")
        found["train"] = train_settings(runner, seed=0, batch_size=batch_size)
    if "fidelity" in strategy:
        found["fidelity"] = fidelity_settings(_table(strategy, "fidelity", KEY))
    return found


def check_training(settings: StrategySettings, fidelity_key: str, train_key: str) -> None:
    """A fidelity ladder needs training, one objective (a pruner compares one value) and a
    strategy that climbs it (Optuna's samplers through their pruner, the brute force over
    the whole space in one worker)."""
    if settings.fidelity is None:
        return
    value = settings.fidelity.pruner
    if settings.train is None:
        rule = f"needs quantization-aware training ({train_key}): it ladders training epochs"
        raise ConfigError(fidelity_key, rule, value)
    if not settings.objective.single:
        rule = "needs one objective: a pruner compares one value per candidate"
        raise ConfigError(fidelity_key, rule, value)
    if settings.name in ("greedy", "ilp"):
        raise ConfigError(fidelity_key, "applies to Optuna's samplers and bruteforce", value)
    if settings.name == "bruteforce" and (settings.n_jobs > 1 or settings.chunked):
        rule = "climbs the bruteforce ladder in one worker, unchunked (n_jobs = 1)"
        raise ConfigError(fidelity_key, rule, value)


def python_settings(
    strategy: "str | BaseSampler | None", objective: Objective, **kwargs: Any
) -> StrategySettings:
    """`bitscout.search`'s keyword arguments (the spec's Python names) as settings; errors
    name the argument. `strategy` may be an Optuna sampler, used as it is: the settings name
    its class as the sampler (what a resumed study's fingerprint compares); None is the
    default strategy."""
    values = python_values(kwargs)
    training = _python_training(values.pop("train", None), values.pop("fidelity", None))
    if strategy is None or isinstance(strategy, str):  # None: the default, as in a config
        values["strategy"] = check(BY_PYTHON["strategy"], strategy, "strategy")
        settings = build_settings(values, objective, str, **training)
        check_training(settings, "fidelity", "train")
        return settings
    from optuna.samplers import BaseSampler

    if not isinstance(strategy, BaseSampler):  # refused in the words a config gets
        check(BY_PYTHON["strategy"], strategy, "strategy")
    values["strategy"] = "optuna"
    settings = build_settings(values, objective, str, sampler_object=strategy, **training)
    check_training(settings, "fidelity", "train")
    return replace(settings, sampler=type(strategy).__name__)


def _python_training(train: Any, fidelity: Any) -> dict[str, Any]:
    from bitscout.study.training import fidelity_settings, train_settings

    found: dict[str, Any] = {}
    if train is not None:
        found["train"] = train_settings(train, seed=0, python=True)
    if fidelity is not None and fidelity is not False:
        found["fidelity"] = fidelity_settings(fidelity, python=True)
    return found


def population_note(settings: StrategySettings) -> str | None:
    """NSGA-II/III's first generation is random: fewer trials than a population is random
    search, which deserves a line."""
    n = settings.n_trials
    genetic = settings.name == "optuna" and settings.sampler in ("nsgaii", "nsgaiii")
    if not genetic or n is None or n >= POPULATION:
        return None
    return (f"note: {settings.sampler} with {n} trials, fewer than its population of "
            f"{POPULATION}, is random search (its first generation is random)")  # fmt: skip
