"""What every strategy gets: the space, the evaluator, the objective and the store."""

import math
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from bitscout._core.registry import Registry
from bitscout.errors import ConfigError, SearchFailed
from bitscout.evaluate.evaluator import Evaluator
from bitscout.objective import Objective
from bitscout.quant.space import Choice, SearchSpace
from bitscout.results.trials import Result
from bitscout.study.settings import StrategySettings
from bitscout.study.store.base import Store

TrialHook = Callable[[int, Mapping[str, Choice], Result], None]


@dataclass
class SearchContext:
    space: SearchSpace
    evaluator: Evaluator
    objective: Objective
    settings: StrategySettings
    store: Store
    on_trial: TrialHook = lambda number, config, result: None
    notify: Callable[[str], None] = lambda message: None  # one line for the user
    started: float = field(default_factory=time.perf_counter)
    out: Path | None = None  # the run directory, where a strategy may find earlier results

    def score(self, config: Mapping[str, Choice]) -> Result:
        """Evaluate `config` (or reuse its cached metrics) and apply the objective. A candidate
        that raises or yields a non-finite metric comes back as a failed result."""
        return self.score_many([config])[0]

    def score_many(
        self, configs: Sequence[Mapping[str, Choice]], *, cache: bool = True, trained: bool = True
    ) -> list[Result]:
        """`score` for consecutive candidates, evaluated together where the evaluator can
        (`cache=False`: without keeping their metrics in the evaluator's cache; `trained=False`:
        their post-training scores even in a quantization-aware search, uncached: a fidelity
        ladder's first rung)."""
        start = time.perf_counter()
        try:
            evaluated = self._evaluate(configs, cache, trained)
        except (SearchFailed, ConfigError):  # the audit, or a bad training setting (NaN loss)
            raise
        except Exception:  # noqa: BLE001 - one candidate's failure must not stop the search
            if len(configs) > 1:  # find which candidates fail, one at a time
                return [self.score_many([c], cache=cache, trained=trained)[0] for c in configs]
            return [failed(traceback.format_exc(), time.perf_counter() - start)]
        share = (time.perf_counter() - start) / max(1, len(configs))
        trainer = self.evaluator.trainer
        # every candidate trains fully, or (post-training) not at all
        epochs = None if trainer is None else trainer.epochs_of() if trained else 0
        return [self.result(metrics, cached, share, epochs) for metrics, cached in evaluated]

    def _evaluate(
        self, configs: Sequence[Mapping[str, Choice]], cache: bool, trained: bool
    ) -> list[tuple[dict[str, float], bool]]:
        if trained:
            return self.evaluator.evaluate_many(configs, cache=cache)
        return [(metrics, False) for metrics in self.evaluator.ptq_many(configs)]

    def guarded(self, work: Callable[[], Result]) -> Result:
        """`work`'s result for one candidate, or a failed one when it raises (the audit and a
        bad training setting still stop the search)."""
        start = time.perf_counter()
        try:
            return work()
        except (SearchFailed, ConfigError):
            raise
        except Exception:  # noqa: BLE001 - one candidate's failure must not stop the search
            return failed(traceback.format_exc(), time.perf_counter() - start)

    def result(
        self,
        metrics: dict[str, float],
        cached: bool,
        duration: float,
        epochs: int | None = None,
        pruned: bool = False,
    ) -> Result:
        """A candidate's `metrics` under the objective (failed when one is not finite), after
        `epochs` of training; `pruned`: a fidelity ladder stops it at this rung."""
        bad = [f"{k} = {v}" for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            return failed(f"non-finite metric: {', '.join(bad)}", duration)
        reason = self.objective.reason(metrics)
        return Result(
            metrics=metrics,
            values=self.objective.values(metrics),
            violations=self.objective.violations(metrics),
            feasible=not reason,
            cached=cached,
            duration_s=duration,
            reason=reason,
            epochs=epochs,
            pruned=pruned,
        )

    def budget(self) -> int:
        """Trials still to run: `n_trials` counts the trials of the study that ran to an end
        (complete, or failed by their own evaluation), so a re-run of an interrupted search
        only runs what is missing."""
        target = self.settings.n_trials or STRATEGIES.get(self.settings.name).default_target(
            self.space
        )
        return max(0, target - self.store.ended_count())

    def timed_out(self) -> bool:
        timeout = self.settings.timeout
        return timeout is not None and time.perf_counter() - self.started >= timeout


class Strategy(ABC):
    """A search strategy. `sampler` runs once, before the store is opened (Optuna attaches
    a sampler to a study); `run` then adds trials to `ctx.store` until the budget, the
    timeout or the space is spent."""

    def sampler(
        self, settings: StrategySettings, space: SearchSpace, objective: Objective
    ) -> optuna.samplers.BaseSampler | None:
        """None for bitscout's own strategies, once `check` passes."""
        self.check(space, settings)
        return None

    def check(self, space: SearchSpace, settings: StrategySettings) -> None:
        """Raises ConfigError when this strategy cannot search `space` with `settings`; runs
        when its sampler is made, before the store is opened. The base accepts every space."""
        return None

    def default_target(self, space: SearchSpace) -> int:
        """How many trials a search without `n_trials` runs: the whole space."""
        return space.size

    @abstractmethod
    def run(self, ctx: SearchContext) -> None: ...


def failed(reason: str, duration: float) -> Result:
    """The result of a candidate whose evaluation raised (`reason`: its traceback) or gave a
    non-finite metric."""
    last = reason.strip().splitlines()[-1] if reason.strip() else "unknown error"
    return Result({}, [], {}, False, False, duration, failure=last)


STRATEGIES: Registry[Strategy] = Registry("strategy")
