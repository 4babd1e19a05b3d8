"""Optuna's samplers as one strategy, `optuna`, picked with `setup.sampler`."""

import time
from collections.abc import Callable
from typing import Any, cast

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.samplers import BaseSampler

from bitscout.errors import ConfigError
from bitscout.objective import Objective
from bitscout.quant.space import Choice, SearchSpace
from bitscout.results.trials import Result
from bitscout.study.fidelity import ladder_summary, make_pruner, spent_line
from bitscout.study.settings import StrategySettings
from bitscout.study.store.base import (
    HEARTBEAT,
    RETRY_OF,
    WARM_START,
    WORKER,
    Store,
    TrialFinished,
    result_attrs,
)
from bitscout.study.store.liveness import Beat, Heartbeat, is_stale, worker_id
from bitscout.study.strategies import greedy, ilp
from bitscout.study.strategies.base import STRATEGIES, SearchContext, Strategy

POLL_S = 0.2  # how often a trial waiting for room looks again
WAIT_LIMIT_S = 30.0  # then it is pruned and the worker asks again (a queued retry comes first)


def build_sampler(name: str, seed: int, space: SearchSpace) -> BaseSampler:
    """Every sampler seeded. TPE, NSGA-II/III and GP read constraint violations from the
    trials themselves (`Trial.set_constraint`)."""
    s = optuna.samplers
    if name == "grid" and space.mixed:
        rule = "cannot search a space whose fields depend on the format; use bruteforce"
        raise ConfigError("search.strategy.setup.sampler", f"grid {rule}", name)
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
        with ctx.store.writing():
            _optimize(ctx)
        found = ladder_summary(ctx.store, ctx.settings, ctx.evaluator.trainer)
        if found is not None:
            ctx.notify(spent_line(found))


def _optimize(ctx: SearchContext) -> None:
    """Fail the dead workers' trials (queued again), then ask and tell until the budget."""
    study = ctx.store.study
    if ctx.settings.fidelity is not None and ctx.evaluator.trainer is not None:
        # Optuna keeps no pruner in its storage: each process's study (an extra worker's too,
        # which runs this) takes it before its first trial
        epochs = ctx.evaluator.trainer.epochs_of()
        study.pruner = make_pruner(ctx.settings.fidelity, epochs)
    for dead in ctx.store.fail_stale():
        study.enqueue_trial(dict(dead.params), user_attrs={RETRY_OF: dead.number})
    if ctx.budget() <= 0 or _all_known(ctx, _known(ctx.store)):
        return
    if ctx.settings.warm_start is not None and not ctx.store.trials():
        _enqueue_warm(ctx, ctx.settings.warm_start)
    scored: dict[int, tuple[dict, Result]] = {}
    known = _known(ctx.store)
    start = time.monotonic()
    with Heartbeat() as heartbeat:
        # one trial per `optimize` call, then its report: `optimize`'s own callbacks get a deep
        # copy of the trial (0.04-0.06 ms on the seed space) that none needs
        for _ in range(ctx.budget()):  # a bound even when other workers' trials never end
            left = _time_left(ctx.settings.timeout, start)
            if left is not None and left <= 0:
                break
            study.optimize(
                lambda trial: _objective(ctx, heartbeat, trial, scored),
                n_trials=1,
                timeout=left,
                catch=(CandidateFailed,),
                gc_after_trial=False,
            )
            if _reported(ctx, scored, known):
                break


def _time_left(timeout: float | None, start: float) -> float | None:
    return None if timeout is None else timeout - (time.monotonic() - start)


def _enqueue_warm(ctx: SearchContext, name: str) -> None:
    """Queue a greedy walk's path or the ILP's best predicted candidates, at most half the
    budget, so the sampler then learns from them; a resumed study keeps its queue, so this
    runs on a fresh study only."""
    start = {"greedy": greedy.warm_start, "ilp": ilp.warm_start}[name]
    for config in start(ctx, max(1, ctx.budget() // 2)):
        ctx.store.study.enqueue_trial(config, user_attrs={WARM_START: name},
                                      skip_if_exists=True)  # fmt: skip


def _config_key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def _known(store: Store) -> set[tuple]:
    return {_config_key(dict(t.params)) for t in store.ended()}


def _all_known(ctx: SearchContext, known: set[tuple]) -> bool:
    """Whether every candidate of the space has ended once: a sampler would only repeat
    itself from then on (TPE proposes cached configs for ever when n_trials exceeds the space)."""
    if len(known) < ctx.space.size:
        return False
    ctx.notify(
        f"all {ctx.space.size} candidates of the space are evaluated: stopping before "
        f"n_trials = {ctx.settings.n_trials}"
    )
    return True


def _reported(
    ctx: SearchContext, scored: dict[int, tuple[dict, Result]], known: set[tuple]
) -> bool:
    """Report the trials that the store now has finished; whether to stop: the study holds
    `n_trials` ended trials (so workers sharing it stop together) or every candidate is known."""
    for number in list(scored):
        config, result = scored.pop(number)
        ctx.on_trial(number, config, result)
        known.add(_config_key(config))
    return ctx.budget() <= 0 or _all_known(ctx, known)


def _ahead(store: Store, number: int, retry: bool) -> tuple[int, int]:
    """Trials that may count towards n_trials ahead of trial `number`: those that ended, and
    those running live (numbered below it; all of them for a retried trial, which was queued
    before trials numbered after it started). Also, how many ended."""
    ended = {t.number for t in store.ended()}
    running = [
        t
        for t in store.trials(("running",))
        if t.number != number and (retry or t.number < number) and not is_stale(t)
    ]
    return len(ended - {number}) + len(running), len(ended)


def _wait_for_room(ctx: SearchContext, trial: optuna.Trial) -> None:
    """Wait while the trials ahead of this one fill n_trials; prune it when they do (so
    several workers end with exactly n_trials), or when waiting took too long."""
    target = ctx.settings.n_trials or ctx.space.size
    retry = RETRY_OF in trial.user_attrs
    deadline = time.monotonic() + WAIT_LIMIT_S
    while True:
        ahead, ended = _ahead(ctx.store, trial.number, retry)
        if ahead < target:
            return
        if ended >= target or time.monotonic() > deadline:
            raise optuna.TrialPruned("n_trials is reached by other workers' trials")
        time.sleep(POLL_S)


def _objective(
    ctx: SearchContext,
    heartbeat: Heartbeat,
    trial: optuna.Trial,
    scored: dict[int, tuple[dict, Result]],
) -> Any:
    if trial.user_attrs.get(WORKER) != worker_id():  # a journal's store stamps it on creation
        trial.set_user_attr(WORKER, worker_id())
    heartbeat.watch(_beat(trial))
    _wait_for_room(ctx, trial)
    config = ctx.space.draw(lambda d: cast(Choice, trial.suggest_categorical(d.name, d.choices)))
    if (reason := ctx.space.invalid(config)) is not None:
        raise optuna.TrialPruned(f"no candidate of the space (skipped): {reason}")
    ctx.store.publish(trial.number)
    result = ctx.score(config) if ctx.settings.fidelity is None else _climb(ctx, trial, config)
    for key, value in result_attrs(result).items():
        trial.set_user_attr(key, value)
    heartbeat.watch(None)
    scored[trial.number] = (config, result)
    if result.failure is not None:
        raise CandidateFailed(result.failure)
    for name, violation in result.violations.items():
        trial.set_constraint(name, violation)
    if result.pruned:
        raise optuna.TrialPruned(f"pruned after {result.epochs} epochs of training")
    return result.values[0] if ctx.objective.single else result.values


def _climb(ctx: SearchContext, trial: optuna.Trial, config: dict[str, Choice]) -> Result:
    """`config` up the fidelity ladder, trained once through its rungs: its objective value
    reported at each rung (its post-training score at step 0), stopped where the study's
    pruner says (a pruned result: that rung's metrics). A config whose full-training metrics
    are cached (proposed again, or complete in a resumed study) is not trained again."""
    evaluator, trainer = ctx.evaluator, ctx.evaluator.trainer
    assert trainer is not None and ctx.settings.fidelity is not None  # settings check both
    if evaluator.key(config) in evaluator.cache:
        return ctx.score(config)
    full = trainer.epochs_of()
    rungs = ctx.settings.fidelity.rungs(full)
    start = time.perf_counter()
    stopped: list[Result] = []

    def judge(epochs: int, metrics: dict[str, float]) -> bool:
        result = ctx.result(metrics, False, time.perf_counter() - start, epochs, pruned=True)
        if result.failure is None:
            trial.report(result.values[0], step=epochs)
            if not trial.should_prune():
                return True
        stopped.append(result)
        return False

    def work() -> Result:
        if rungs[0] == 0 and not judge(0, evaluator.ptq_many([config])[0]):
            return stopped[0]
        training = [r for r in rungs if 0 < r < full]
        metrics, epochs = evaluator.train_and_score(evaluator.plan(config), judge, training)
        if stopped:
            return stopped[0]
        evaluator.remember(config, metrics)
        return ctx.result(metrics, False, time.perf_counter() - start, epochs)

    return ctx.guarded(work)


def _beat(trial: optuna.Trial) -> Beat:
    """Stamps the live `trial` through Optuna's own handle of it."""

    def beat(now: float) -> None:
        try:
            trial.set_user_attr(HEARTBEAT, now)
        except UpdateFinishedTrialError as err:
            raise TrialFinished(str(err)) from err

    return beat


STRATEGIES.register("optuna")(OptunaStrategy())
