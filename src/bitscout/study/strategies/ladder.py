"""The brute force's fidelity ladder: successive halving over the whole space (or the first
`n_trials` candidates of its search order) at once.

Every candidate gets its post-training score (rung 0, the fast engine in batches); at each
rung the best `kept(n, reduction_factor)` of the candidates there go on (`promotes`'s `bar`,
the rule Optuna's samplers meet through their pruner; ties cut by search order, so that
exactly that many go on), and are trained from the float weights to the next rung's epochs;
the last rung is full training. Every candidate ends as one trial: pruned at the rung it
reached, with that rung's metrics, or complete. Each carries its metrics at every rung it was
scored at (`RUNGS`), so an interrupted ladder, run again, reuses what it recorded,
recomputes the rest (training is deterministic per candidate) and ends with the same trials
and winner.
"""

import time
from collections.abc import Mapping, Sequence
from typing import Any

from bitscout.results.trials import Result
from bitscout.study.fidelity import bar, kept, ladder_summary, reaches, spent_line
from bitscout.study.store.base import EPOCHS, REASON, RUNGS, TrialRecord
from bitscout.study.strategies.base import SearchContext, failed

BATCH = 64  # candidates scored together by the fast engine at rung 0
History = dict[int, dict[str, dict[str, float]]]  # candidate -> rung (epochs) -> metrics


def climb(ctx: SearchContext, order: Sequence[int]) -> None:
    """Run the ladder over the candidates `order` (indices, in search order) to the end, or
    until the timeout (what is not recorded then is computed again by the next run)."""
    trainer, fidelity = ctx.evaluator.trainer, ctx.settings.fidelity
    assert trainer is not None and fidelity is not None  # settings.check_training
    rungs = fidelity.rungs(trainer.epochs_of())
    known = _recorded(ctx)
    history: History = {i: dict(t.user_attrs.get(RUNGS, {})) for i, t in known.items()}
    alive = list(order)
    with ctx.store.writing():
        for epochs in rungs:
            results = _rung(ctx, alive, epochs, known, history)
            if results is None:
                return  # timed out
            final = epochs == rungs[-1]
            going = [] if final else _promoted(ctx, alive, results, known)
            stays = set(going)
            for index in alive:
                if index not in stays and index not in known:
                    _record(ctx, index, results[index], history, pruned=not final)
            alive = going
    summary = ladder_summary(ctx.store, ctx.settings, trainer)
    if summary is not None:
        ctx.notify(spent_line(summary))


def _recorded(ctx: SearchContext) -> dict[int, TrialRecord]:
    """The candidates an earlier run of this ladder recorded, by index."""
    return {ctx.space.index(t.params): t for t in ctx.store.ended()}


def _promoted(
    ctx: SearchContext,
    alive: Sequence[int],
    results: Mapping[int, Result],
    known: Mapping[int, TrialRecord],
) -> list[int]:
    """The candidates of this rung that go on, in search order: those `promotes` lets on,
    the first `kept` of them by value (earlier candidates first on ties). A candidate an
    earlier run recorded as stopped here stays stopped."""
    assert ctx.settings.fidelity is not None
    eta = ctx.settings.fidelity.reduction_factor
    maximize = ctx.objective.directions[0] == "maximize"
    scored = [i for i in alive if results[i].failure is None]
    values = [results[i].values[0] for i in scored]
    if not values:
        return []
    threshold = bar(values, eta, maximize)  # `promotes` for each, the values sorted once
    able = [
        i
        for i, v in zip(scored, values, strict=True)
        if reaches(v, threshold, maximize) and _may_go_on(known.get(i), results[i])
    ]
    sign = -1.0 if maximize else 1.0
    position = {index: p for p, index in enumerate(alive)}
    best = sorted(able, key=lambda i: (sign * results[i].values[0], position[i]))
    chosen = set(best[: kept(len(values), eta)])
    return [i for i in alive if i in chosen]


def _may_go_on(trial: TrialRecord | None, result: Result) -> bool:
    """False for a candidate recorded as pruned at this rung (by a run whose cut differed:
    another n_trials or objective): a recorded trial is never recorded again."""
    return trial is None or not (
        trial.state == "pruned" and trial.user_attrs.get(EPOCHS) == result.epochs
    )


def _rung(
    ctx: SearchContext, alive: Sequence[int], epochs: int, known: Mapping[int, TrialRecord],
    history: History,
) -> dict[int, Result] | None:  # fmt: skip
    """Every candidate of `alive` scored at `epochs`: recalled when recorded, else by the
    fast engine (rung 0) or trained; None when the search timed out first."""
    results = {i: r for i in alive if (r := _recalled(ctx, known.get(i), history, i, epochs))}
    todo = [i for i in alive if i not in results]
    if epochs == 0:
        results.update(_post_training(ctx, todo))
    for index in todo if epochs > 0 else ():
        if ctx.timed_out():
            return None
        results[index] = _trained(ctx, index, epochs)
    for index in todo:
        if results[index].failure is None:
            history.setdefault(index, {})[str(epochs)] = results[index].metrics
    return results


def _recalled(
    ctx: SearchContext, trial: TrialRecord | None, history: History, index: int, epochs: int
) -> Result | None:
    """A recorded candidate's result at `epochs`: its metrics there, or its failure."""
    if trial is None:
        return None
    metrics = history.get(index, {}).get(str(epochs))
    if metrics is not None:
        return ctx.result(dict(metrics), False, 0.0, epochs)
    if trial.state == "failed":
        return failed(str(trial.user_attrs.get(REASON, "failed")), 0.0)
    return None  # recorded by another ladder (other settings): scored again


def _post_training(ctx: SearchContext, indices: Sequence[int]) -> dict[int, Result]:
    """Rung 0: the candidates' post-training scores, a batch at a time by the fast engine
    (`score_many` finds the candidate that fails where a batch raises)."""
    found: dict[int, Result] = {}
    for start in range(0, len(indices), BATCH):
        batch = indices[start : start + BATCH]
        results = ctx.score_many([ctx.space.config(i) for i in batch], trained=False)
        found.update(zip(batch, results, strict=True))
    return found


def _trained(ctx: SearchContext, index: int, epochs: int) -> Result:
    """Candidate `index` trained from the float weights for `epochs` (full training when
    they are the last rung's), then scored."""
    evaluator = ctx.evaluator
    began = time.perf_counter()

    def work() -> Result:
        plan = evaluator.plan(ctx.space.config(index))
        stop = [epochs] if epochs < _full(ctx) else []
        metrics, done = evaluator.train_and_score(plan, lambda e, m: False, stop)
        return ctx.result(metrics, False, time.perf_counter() - began, done)

    return ctx.guarded(work)


def _full(ctx: SearchContext) -> int:
    assert ctx.evaluator.trainer is not None
    return ctx.evaluator.trainer.epochs_of()


def _record(
    ctx: SearchContext, index: int, result: Result, history: History, *, pruned: bool
) -> None:
    """Candidate `index` as one trial: pruned at its rung, complete, or failed."""
    config = ctx.space.config(index)
    if pruned and result.failure is None:
        result = ctx.result(result.metrics, False, result.duration_s, result.epochs, pruned=True)
    attrs: dict[str, Any] = {RUNGS: history.get(index, {})}
    number = ctx.store.record(config, result, attrs)
    ctx.on_trial(number, config, result)
