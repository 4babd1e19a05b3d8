"""What `bitscout compare` and `bitscout.compare` accept: the strategy labels, the threshold and
the budgets, with their defaults and checks. Light (no PyTorch, no Optuna), so the command
line's `--help` can list every label without loading the search."""

import math
from collections.abc import Callable, Sequence

from bitscout._core.validate import unknown
from bitscout.errors import ConfigError
from bitscout.study.spec import SAMPLER_NAMES

# Here `bruteforce` is our exhaustive strategy, so Optuna's sampler of that name is left out.
# Ours: label -> (strategy, brute-force order, warm start); every other label is a sampler.
OURS = {
    "bruteforce": ("bruteforce", "index", None),
    "bruteforce-reversed": ("bruteforce", "reversed", None),
    "shuffled": ("bruteforce", "shuffled", None),
    "greedy": ("greedy", "index", None),
    "greedy-tpe": ("optuna", "index", "greedy"),
    "ilp": ("ilp", "index", None),
    "ilp-tpe": ("optuna", "index", "ilp"),
}
KNOWN = (*OURS, *(s for s in SAMPLER_NAMES if s != "bruteforce"))
DEFAULT_STRATEGIES = ("bruteforce", "random", "tpe")
WITHIN = 1.0  # "near the optimum": within this many percent of |optimum|
BUDGETS = (50, 100, 200, 500, 1000)  # trials at which the best so far is reported
Flag = Callable[[str], str]  # an argument's name as the door that took it spells it


def parse_strategies(names: Sequence[str] | str, key: str = "--strategies") -> list[str]:
    """Validate `strategies`; a comma-separated string is accepted as the CLI gives it."""
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names]
    if not names:
        raise ConfigError(key, f"needs at least one strategy; known: {', '.join(KNOWN)}")
    for name in names:
        if name not in KNOWN:
            raise ConfigError(key, unknown("strategy", name, KNOWN), name)
    if len(set(names)) != len(names):
        raise ConfigError(key, "must name each strategy once", ",".join(names))
    return names


def parse_within(value: object, key: str = "--within") -> float:
    """The threshold in percent of |optimum|: a number in (0, 100]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, "must be a percentage in (0, 100]", value)
    if not (math.isfinite(value) and 0 < value <= 100):
        raise ConfigError(key, "must be a percentage in (0, 100]", value)
    return float(value)


def parse_budgets(value: Sequence[int] | str, key: str = "--budgets") -> tuple[int, ...]:
    """Trial counts, increasing, each >= 1; a comma-separated string as the CLI gives it."""
    items: list[object] = list(value.split(",")) if isinstance(value, str) else list(value)
    budgets = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        number = int(text) if isinstance(text, str) and text.isdigit() else text
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ConfigError(key, "must be integers >= 1, comma-separated", value)
        budgets.append(number)
    if not budgets or budgets != sorted(set(budgets)):
        raise ConfigError(key, "must be one or more distinct trial counts, increasing", value)
    return tuple(budgets)


def check_compare(
    strategies: Sequence[str] | str,
    repeats: int,
    trials: int | None,
    flag: Flag = lambda name: f"--{name}",
) -> list[str]:
    """The strategies, repeats and trials `compare_job` takes, checked before any work."""
    labels = parse_strategies(strategies, flag("strategies"))
    for key, value in (("repeats", repeats), ("trials", 1 if trials is None else trials)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(flag(key), "must be an integer >= 1", value)
    return labels
