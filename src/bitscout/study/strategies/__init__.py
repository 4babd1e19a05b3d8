"""Search strategies, by name: `bruteforce` (ours) and `optuna` (its samplers)."""

from bitscout.study.strategies import bruteforce, optuna_samplers  # noqa: F401 - fill the registry
from bitscout.study.strategies.base import STRATEGIES, SearchContext, Strategy

__all__ = ["STRATEGIES", "SearchContext", "Strategy"]
