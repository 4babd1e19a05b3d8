"""Optuna's samplers as one strategy, `optuna`, picked with `setup.sampler`."""

from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from bitscout.liveness import Heartbeat, fail_stale, worker_id
from bitscout.objective import Objective
from bitscout.settings import StrategySettings
from bitscout.space import SearchSpace
from bitscout.store import Result
from bitscout.strategies.base import STRATEGIES, SearchContext, Strategy


def build_sampler(name: str, seed: int, space: SearchSpace) -> BaseSampler:
    """Every sampler seeded. TPE, NSGA-II/III and GP read constraint violations from the
    trials themselves (`Trial.set_constraint`)."""
    s = optuna.samplers
    grid = {d.name: list(d.choices) for d in space.dimensions}
    makers: dict[str, Callable[[], BaseSampler]] = {
        # constant liar: workers sharing a study don't all propose the config still running
        "tpe": lambda: s.TPESampler(seed=seed, constant_liar=True),
        "random": lambda: s.RandomSampler(seed=seed),
        "nsgaii": lambda: s.NSGAIISampler(seed=seed),
        "nsgaiii": lambda: s.NSGAIIISampler(seed=seed),
        "qmc": lambda: s.QMCSampler(seed=seed, warn_independent_sampling=False),
        "gp": lambda: s.GPSampler(seed=seed),
        "grid": lambda: s.GridSampler(grid, seed=seed),
        "bruteforce": lambda: s.BruteForceSampler(seed=seed),
    }
    return makers[name]()


class CandidateFailed(Exception):
    """A candidate raised or gave a non-finite metric: its trial is failed, the search goes on."""


class OptunaStrategy(Strategy):
    """Ask/tell through `study.optimize`; a repeated proposal reuses the cached metrics. A
    trial left RUNNING by a dead worker is failed and its config queued to run again."""

    def sampler(
        self, settings: StrategySettings, space: SearchSpace, objective: Objective
    ) -> BaseSampler:
        return build_sampler(settings.sampler, settings.seed, space)

    def run(self, ctx: SearchContext) -> None:
        for dead in fail_stale(ctx.study):
            ctx.study.enqueue_trial(dead.params, user_attrs={"retry_of": dead.number})
        budget = ctx.budget()
        scored: dict[int, tuple[dict, Result]] = {}
        if budget > 0:
            with Heartbeat(ctx.study) as heartbeat:
                ctx.study.optimize(
                    lambda trial: _objective(ctx, heartbeat, trial, scored),
                    n_trials=budget,
                    timeout=ctx.settings.timeout,
                    catch=(CandidateFailed,),
                    callbacks=[_after_trial(ctx, scored)],
                    gc_after_trial=False,
                )


def _after_trial(
    ctx: SearchContext, scored: dict[int, tuple[dict, Result]]
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """Report each trial once the store has it finished; stop once the study holds `n_trials`
    ended trials, so workers sharing it stop together."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.number in scored:
            ctx.on_trial(trial.number, *scored.pop(trial.number))
        if ctx.budget() <= 0:
            study.stop()

    return callback


def _objective(
    ctx: SearchContext,
    heartbeat: Heartbeat,
    trial: optuna.Trial,
    scored: dict[int, tuple[dict, Result]],
) -> Any:
    trial.set_user_attr("worker", worker_id())
    heartbeat.watch(trial._trial_id)
    config = {d.name: trial.suggest_categorical(d.name, d.choices) for d in ctx.space.dimensions}
    result = ctx.score(config)
    for key, value in result.attrs().items():
        trial.set_user_attr(key, value)
    heartbeat.watch(None)
    scored[trial.number] = (config, result)
    if result.failure is not None:
        raise CandidateFailed(result.failure)
    for name, violation in result.violations.items():
        trial.set_constraint(name, violation)
    return result.values[0] if ctx.objective.single else result.values


STRATEGIES.register("optuna")(OptunaStrategy())
