"""Optuna's samplers as one strategy, `optuna`, picked with `setup.sampler`."""

from collections.abc import Callable

import optuna
from optuna.samplers import BaseSampler

from bitscout.objective import Objective
from bitscout.settings import StrategySettings
from bitscout.space import SearchSpace
from bitscout.strategies.base import STRATEGIES, SearchContext, Strategy


def build_sampler(name: str, seed: int, space: SearchSpace) -> BaseSampler:
    """Every sampler seeded. TPE, NSGA-II/III and GP read constraint violations from the
    trials themselves (`Trial.set_constraint`)."""
    s = optuna.samplers
    grid = {d.name: list(d.choices) for d in space.dimensions}
    makers: dict[str, Callable[[], BaseSampler]] = {
        "tpe": lambda: s.TPESampler(seed=seed),
        "random": lambda: s.RandomSampler(seed=seed),
        "nsgaii": lambda: s.NSGAIISampler(seed=seed),
        "nsgaiii": lambda: s.NSGAIIISampler(seed=seed),
        "qmc": lambda: s.QMCSampler(seed=seed, warn_independent_sampling=False),
        "gp": lambda: s.GPSampler(seed=seed),
        "grid": lambda: s.GridSampler(grid, seed=seed),
        "bruteforce": lambda: s.BruteForceSampler(seed=seed),
    }
    return makers[name]()


class OptunaStrategy(Strategy):
    """Ask/tell through `study.optimize`; a repeated proposal reuses the cached metrics."""

    def sampler(
        self, settings: StrategySettings, space: SearchSpace, objective: Objective
    ) -> BaseSampler:
        return build_sampler(settings.sampler, settings.seed, space)

    def run(self, ctx: SearchContext) -> None:
        def objective(trial: optuna.Trial) -> float | list[float]:
            config = {
                d.name: trial.suggest_categorical(d.name, d.choices) for d in ctx.space.dimensions
            }
            result = ctx.score(config)
            for key, value in result.attrs().items():
                trial.set_user_attr(key, value)
            for name, violation in ctx.objective.violations(result.metrics).items():
                trial.set_constraint(name, violation)
            ctx.on_trial(trial.number, config, result)
            return result.values[0] if ctx.objective.single else result.values

        budget = ctx.budget()
        if budget > 0:
            ctx.study.optimize(
                objective,
                n_trials=budget,
                timeout=ctx.settings.timeout,
                n_jobs=ctx.settings.n_jobs,
                gc_after_trial=False,
            )


STRATEGIES.register("optuna")(OptunaStrategy())
