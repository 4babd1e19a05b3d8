"""Our own exhaustive strategy (not Optuna's BruteForceSampler)."""

from bitscout.store import done_trials, record
from bitscout.strategies.base import STRATEGIES, SearchContext, Strategy


class BruteForce(Strategy):
    """Evaluates candidates in index order: the mixed-radix order of `SearchSpace`, layers in
    model order and the last dimension varying fastest. Candidates already complete in the
    study are skipped, so re-running an interrupted search continues where it stopped."""

    def run(self, ctx: SearchContext) -> None:
        space = ctx.space
        done = {space.index(t.params) for t in done_trials(ctx.study)}
        budget = ctx.budget()
        for index in range(space.size):
            if budget <= 0 or ctx.timed_out():
                return
            if index in done:
                continue
            config = space.config(index)
            result = ctx.score(config)
            trial = record(ctx.study, space, config, result)
            ctx.on_trial(trial.number, config, result)
            budget -= 1


STRATEGIES.register("bruteforce")(BruteForce())
