"""What every strategy gets: the space, the evaluator, the objective and the study."""

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import optuna

from bitscout.evaluate import Evaluator
from bitscout.objective import Objective
from bitscout.registry import Registry
from bitscout.settings import StrategySettings
from bitscout.space import Choice, SearchSpace
from bitscout.store import Result, done_trials

TrialHook = Callable[[int, Mapping[str, Choice], Result], None]


@dataclass
class SearchContext:
    space: SearchSpace
    evaluator: Evaluator
    objective: Objective
    settings: StrategySettings
    study: optuna.Study
    on_trial: TrialHook = lambda number, config, result: None
    started: float = field(default_factory=time.perf_counter)

    def score(self, config: Mapping[str, Choice]) -> Result:
        """Evaluate `config` (or reuse its cached metrics) and apply the objective."""
        start = time.perf_counter()
        metrics, cached = self.evaluator.evaluate(config)
        return Result(
            metrics=metrics,
            values=self.objective.values(metrics),
            violations=self.objective.violations(metrics),
            feasible=self.objective.feasible(metrics),
            cached=cached,
            duration_s=time.perf_counter() - start,
        )

    def budget(self) -> int:
        """Trials still to run: `n_trials` counts every complete trial in the study, so a
        re-run of an interrupted search only runs what is missing."""
        target = self.settings.n_trials or self.space.size
        return max(0, target - len(done_trials(self.study)))

    def timed_out(self) -> bool:
        timeout = self.settings.timeout
        return timeout is not None and time.perf_counter() - self.started >= timeout


class Strategy(ABC):
    """A search strategy. `sampler` runs once, before the study is opened (Optuna attaches
    a sampler to a study); `run` then adds trials to `ctx.study` until the budget, the
    timeout or the space is spent."""

    def sampler(
        self, settings: StrategySettings, space: SearchSpace, objective: Objective
    ) -> optuna.samplers.BaseSampler | None:
        return None

    @abstractmethod
    def run(self, ctx: SearchContext) -> None: ...


STRATEGIES: Registry[Strategy] = Registry("strategy")
