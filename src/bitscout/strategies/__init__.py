"""Search strategies, by name: `bruteforce` (ours) and `optuna` (its samplers)."""

from bitscout.strategies import bruteforce, optuna_samplers  # noqa: F401 - fill the registry
from bitscout.strategies.base import STRATEGIES, SearchContext, Strategy

__all__ = ["STRATEGIES", "SearchContext", "Strategy"]
