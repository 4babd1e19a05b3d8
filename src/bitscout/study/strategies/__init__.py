"""Search strategies, by name: `bruteforce`, `greedy` and `ilp` (ours), `optuna` (its samplers)."""

from bitscout.study.strategies import (  # noqa: F401 - fill the registry
    bruteforce,
    greedy,
    ilp,
    optuna_samplers,
)
from bitscout.study.strategies.base import STRATEGIES, SearchContext, Strategy

__all__ = ["STRATEGIES", "SearchContext", "Strategy"]
