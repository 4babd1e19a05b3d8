"""Search strategies, by name: `bruteforce` and `greedy` (ours), `optuna` (its samplers)."""

from bitscout.study.strategies import (  # noqa: F401 - fill the registry
    bruteforce,
    greedy,
    optuna_samplers,
)
from bitscout.study.strategies.base import STRATEGIES, SearchContext, Strategy

__all__ = ["STRATEGIES", "SearchContext", "Strategy"]
