"""`ilp` (HAWQ-V3 style): evaluate a reference (widths at their most precise, every other
field at its first choice); fit a linear model of each metric over the one-hot joint choices
of each tensor's fields (the static metrics exactly, bops through product variables), in
which a choice no evaluated candidate has is predicted as its tensor's best measured one;
then, in rounds until `n_trials`, solve the integer program for the best candidates not yet
measured, each under a model drawn from the fit's posterior (Thompson sampling: a choice
whose effect the measurements leave uncertain gets explored). Probing is lazy: while the
round's solutions choose an unmeasured option, the first such option is probed (the
reference with that tensor changed) and the program solved again; then the solutions are
evaluated and the model refitted. When 8 evaluations have not beaten the best candidate,
the search turns local: the program keeps to candidates that change at most RADIUS tensors
of it, until one beats it (near the best, tensors interact in ways the probes around the
reference miss, and the trials measured there correct the fit). Probes and solutions, local
or not, are all trials. A Pareto search maximizes the first objective under a budget
on the second, swept over its predicted range.

The study attribute `ilp_fit` holds the surrogate's honesty: R² and the largest miss of the
predicted against the measured objective over the solutions evaluated."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import MetricContext, compute_metrics
from bitscout.objective import Objective, sign
from bitscout.quant.space import Choice, Config, SearchSpace
from bitscout.results.surrogate import fit_text
from bitscout.results.trials import Result
from bitscout.study.settings import StrategySettings
from bitscout.study.spec import DEFAULT_SAMPLER_TRIALS
from bitscout.study.store.base import FEASIBLE, STEP, TrialRecord
from bitscout.study.strategies.base import STRATEGIES, SearchContext, Strategy
from bitscout.study.strategies.greedy import Walk, descending, is_width
from bitscout.study.strategies.ilp_model import (
    Bound,
    Fit,
    Layout,
    Linear,
    best,
    exact_model,
    fitted_model,
    groups_of,
)

PREDICTED = "ilp_predicted"  # trial attr: the objective value(s) the model predicted
ROLE = "ilp_role"  # trial attr: "solution", or "local" near a stalled best (probes: step 0)
REUSED = "ilp_reused"  # trial attr: true when a sensitivity result gave its metrics
FIT_ATTR = "ilp_fit"  # study attr: R², the largest miss and how many solutions they cover
BATCH = 4  # solutions evaluated between two fits
SWEEP = 8  # budget levels of a Pareto search's second objective
WARM = 10  # solutions an Optuna sampler's warm start queues at most
STALL = 2 * BATCH  # evaluations without a new best, after which the search turns local
RADIUS = 4  # how many tensors a local solution may change of the best


class Scorer(Walk):
    """A walk that also keeps every measured config's metrics and tags its solutions."""

    def __init__(self, ctx: SearchContext, *, recorded: bool = True) -> None:
        super().__init__(ctx, recorded=recorded)
        self.measured = {_key(t.params): (dict(t.params), dict(t.metrics))
                         for t in ctx.store.ended() if t.metrics}  # fmt: skip
        self.tags: dict[tuple, dict[str, Any]] = {}
        self.reused: set = set()  # evaluator keys whose metrics a sensitivity result gave
        # every evaluated config and its merit, in trial order (a resumed search's too)
        self.history = [(_key(t.params), _stored_merit(ctx.objective, t), t.user_attrs.get(STEP, 0))
                        for t in sorted(ctx.store.ended(), key=lambda t: t.number)]  # fmt: skip

    def _record(self, config: Config, result: Result, step: int) -> int:
        self.history.append((_key(config), _merit(self.ctx.objective, result), step))
        if result.failure is None:
            self.measured[_key(config)] = (dict(config), dict(result.metrics))
        if not self.recorded:
            return -1
        attrs = {STEP: step, **self.tags.get(_key(config), {})}
        if self.ctx.evaluator.key(config) in self.reused:
            attrs[REUSED] = True
        number = self.ctx.store.record(config, result, attrs)
        self.ctx.on_trial(number, config, result)
        return number


def probe_count(space: SearchSpace) -> int:
    """At most how many probes a search evaluates (fewer where they coincide, or where no
    solution asks for them)."""
    return sum(len(g.options) for g in groups_of(space))


class Ilp(Strategy):
    def check(self, space: SearchSpace, settings: StrategySettings) -> None:
        check_space(space, settings)

    def default_target(self, space: SearchSpace) -> int:
        return min(space.size, probe_count(space) + DEFAULT_SAMPLER_TRIALS)

    def run(self, ctx: SearchContext) -> None:
        with ctx.store.writing():
            scorer = Scorer(ctx)
            basis = start(ctx, scorer)
            if basis is None:
                ctx.notify("ilp: the reference candidate failed; nothing to fit")
                return
            step = 1 + max((t.user_attrs.get(STEP, 0) for t in ctx.store.ended()), default=0)
            while scorer.left > 0 and not ctx.timed_out():
                found, role = next_round(basis, step)
                if not found:
                    if scorer.left > 0:
                        ctx.notify("ilp: no candidate left that the constraints allow")
                    break
                scorer.tags.update({_key(c): {PREDICTED: p, ROLE: role} for c, p in found})
                scorer.score([c for c, _ in found], step)
                step += 1
            report_fit(ctx)


def check_space(space: SearchSpace, settings: StrategySettings) -> None:
    key = "search.strategy.name"
    if space.mixed:
        rule = "models one format per layer: use one format per layer, or bruteforce"
        raise ConfigError(key, f"ilp {rule}", "ilp")
    if settings.n_jobs > 1:
        rule = "must be 1 for ilp, which fits one model (use shuffled bruteforce to share)"
        raise ConfigError("search.strategy.setup.n_jobs", rule, settings.n_jobs)


def reference(space: SearchSpace) -> Config:
    """Widths at their most precise choice, every other field at its first."""
    return {d.name: descending(d)[0] if is_width(d) else d.choices[0] for d in space.dimensions}


@dataclass(frozen=True)
class Basis:
    """What every solve of an `ilp` search works from: the search, what it has measured, the
    one-hot layout of its choices, the reference candidate and the exact static metrics."""

    ctx: SearchContext
    scorer: Scorer
    layout: Layout
    ref: Config
    static: Mapping[str, Linear]


def start(ctx: SearchContext, scorer: Scorer) -> Basis | None:
    """The reference evaluated first (a trial, or an evaluation of a warm start); None when
    it failed, leaving nothing to fit around."""
    from bitscout.study.strategies.ilp_reuse import reuse  # it builds on this module

    scorer.reused = reuse(ctx)  # cached in the evaluator: scored below without evaluating
    layout = Layout(groups_of(ctx.space))
    ref = reference(ctx.space)
    scorer.score([ref], 0)
    if not scorer.measured:
        return None
    return Basis(ctx, scorer, layout, ref, static_models(ctx, layout, ref))


def next_round(b: Basis, step: int) -> tuple[list[tuple[Config, list[float]]], str]:
    """The round's solutions and their role: "local" ones near a stalled best while its
    region has candidates left, "solution"s of the whole space otherwise."""
    centre = stalled(b.ctx, b.scorer)
    if centre is not None and (found := settle(b, step, BATCH, centre)):
        return found, "local"
    return settle(b, step, BATCH), "solution"


def settle(
    b: Basis, step: int, most: int, centre: Config | None = None
) -> list[tuple[Config, list[float]]]:
    """Lazy probing: the `most` best predicted candidates, once every option they choose has
    been measured. Until then each round probes one option they ask for (`ref` with that
    tensor changed) and solves again: an option none of them asks for is never probed. One
    probe a round, whatever the budget left, so a resumed search asks what it would have."""
    while b.scorer.left > 0:
        found = propose(b, step, most, centre)
        probe = unprobed(b.scorer, b.layout, b.ref, [c for c, _ in found])
        if probe is None:
            return found
        b.scorer.score([probe], 0)
    return []


def unprobed(
    scorer: Scorer, layout: Layout, ref: Config, configs: Sequence[Config]
) -> Config | None:
    """`ref` with one group at the first option of `configs` that no evaluated config has."""
    tried = _options(layout, map(dict, scorer.known))
    for config in configs:
        for i, j in enumerate(layout.chosen(config)):
            if (i, j) not in tried:
                return layout.groups[i].apply(ref, layout.options[i][j])
    return None


def failed_options(scorer: Scorer, layout: Layout) -> Bound | None:
    """A bound that rules out every option tried only in configs that failed to evaluate:
    the fit knows nothing of them, and would predict them as well as the best."""
    ran = _options(layout, (c for c, _ in scorer.measured.values()))
    coef = _indicator(layout, _options(layout, map(dict, scorer.known)) - ran)
    return Bound(Linear(0.0, coef), hi=0.0) if coef.any() else None


def _options(layout: Layout, configs: Iterable[Mapping[str, Choice]]) -> set[tuple[int, int]]:
    """(group, option) of each group of each of `configs`."""
    return {(i, j) for c in configs for i, j in enumerate(layout.chosen(c))}


def _indicator(layout: Layout, options: Iterable[tuple[int, int]]) -> np.ndarray:
    """The coefficients that count how many of `options` (group, option) a candidate picks."""
    coef = np.zeros(layout.n)
    for i, j in options:
        coef[layout.x_at[i] + j] = 1.0
    return coef


def stalled(ctx: SearchContext, scorer: Scorer) -> Config | None:
    """The best candidate measured, when STALL evaluations after it have not beaten it: the
    program then searches within RADIUS tensors of it (the model, fitted around the
    reference, misjudges what a choice costs near the best, where tensors interact, and the
    trials measured there correct it). None otherwise, and in a Pareto search."""
    history = scorer.history
    if not history or not ctx.objective.single:
        return None
    top = max(range(len(history)), key=lambda i: (history[i][1], -i))
    if sum(step > 0 for _, _, step in history[top + 1 :]) < STALL:
        return None
    best = dict(history[top][0])
    return {d.name: best[d.name] for d in ctx.space.dimensions}


def region(layout: Layout, centre: Config) -> Bound:
    """Candidates that differ from `centre` in at most RADIUS groups."""
    coef = _indicator(layout, _options(layout, [centre]))
    return Bound(Linear(0.0, coef), lo=len(layout.groups) - RADIUS)


def _stored_merit(objective: Objective, trial: TrialRecord) -> tuple[int, float]:
    """`_merit` of a trial the store holds."""
    if trial.state != "complete" or not trial.values:
        return (0, 0.0)
    feasible = trial.user_attrs.get(FEASIBLE, True)
    return (2 if feasible else 1, sign(objective.directions[0]) * trial.values[0])


def _merit(objective: Objective, result: Result) -> tuple[int, float]:
    """Larger is better: ran and feasible first, then the (first) objective value."""
    if result.failure is not None:
        return (0, 0.0)
    return (2 if result.feasible else 1, sign(objective.directions[0]) * result.values[0])


def modelled(objective: Objective) -> list[str]:
    """The metrics the program needs: the objective's and the constraints'."""
    return list(dict.fromkeys([*objective.names, *(c.metric for c in objective.constraints)]))


def static_models(ctx: SearchContext, layout: Layout, ref: Config) -> dict[str, Linear]:
    """The metrics computed from the plan alone, modelled exactly without evaluating."""
    ev = ctx.evaluator
    names = [n for n in modelled(ctx.objective) if ev.get(n).kind == "static"]

    def value(name: str) -> Any:
        ctx_of = lambda c: MetricContext(ev.profile, ev.plan(c))  # noqa: E731
        return lambda c: compute_metrics([name], ctx_of(c), ev.extra)[name]

    return {n: exact_model(layout, ref, value(n)) for n in names}


def fit(
    scorer: Scorer, layout: Layout, objective: Objective, names: Sequence[str]
) -> dict[str, Fit]:
    """Each metric of `names` fitted over every config measured so far."""
    rows = list(scorer.measured.values())
    configs = [c for c, _ in rows]
    good = goods(objective)
    return {n: fitted_model(layout, configs, [m[n] for _, m in rows], good[n]) for n in names}


def goods(objective: Objective) -> dict[str, float]:
    """Per metric, +1 where larger is better, -1 where smaller is: its direction in the
    objective, else the side of its constraint that passes."""
    found = {c.metric: (1.0 if c.op in (">=", ">") else -1.0) for c in objective.constraints}
    return {**found, **{m.name: sign(m.direction) for m in objective.metrics}}


def targets(
    objective: Objective, models: Mapping[str, Linear], layout: Layout, step: int
) -> tuple[Linear, list[Bound], Linear | None]:
    """What the program maximizes, its bounds, and (one objective) the predicted value."""
    bounds = [_bound(models[c.metric], c.op, c.bound) for c in objective.constraints]
    if objective.single:
        value = sum((models[m.name] * m.scale for m in objective.metrics[1:]),
                    models[objective.metrics[0].name] * objective.metrics[0].scale)  # fmt: skip
        return value * sign(objective.direction), bounds, value
    first = objective.metrics[0]
    goal = models[first.name] * sign(first.direction)
    if len(objective.metrics) == 1:
        return goal, bounds, None
    second = objective.metrics[1]
    budget = models[second.name] * sign(second.direction)
    low = best(layout, budget * -1.0, bounds, [], 1)
    high = best(layout, budget, bounds, [], 1)
    if low and high:
        levels = np.linspace(budget(low[0]), budget(high[0]), SWEEP)
        bounds.append(Bound(budget, lo=float(levels[step % SWEEP])))
    return goal, bounds, None


def _bound(model: Linear, op: str, bound: float) -> Bound:
    if op in ("<=", "<"):
        return Bound(model, hi=bound)
    if op in (">=", ">"):
        return Bound(model, lo=bound)
    return Bound(model, lo=bound, hi=bound)


def propose(
    b: Basis, step: int, k: int, centre: Config | None = None
) -> list[tuple[Config, list[float]]]:
    """Up to `k` best predicted candidates not yet measured (within the region around
    `centre`, if one is given), with their predicted values."""
    ctx, scorer, layout, ref, static = b.ctx, b.scorer, b.layout, b.ref, b.static
    names = [n for n in modelled(ctx.objective) if n not in static]
    fits = fit(scorer, layout, ctx.objective, names)
    mean = {**static, **{n: f.mean for n, f in fits.items()}}
    ruled_out = failed_options(scorer, layout)
    extra = [b for b in (ruled_out, centre and region(layout, centre)) if b]
    rng = np.random.default_rng([ctx.settings.seed, step])  # a resumed search draws alike
    excluded = [layout.chosen(dict(key)) for key in scorer.known]
    found = []
    for _ in range(k):
        drawn = {**static, **{n: f.draw(rng) for n, f in fits.items()}}
        goal, bounds, _ = targets(ctx.objective, drawn, layout, step)
        top = best(layout, goal, bounds + extra, excluded, 1)
        if not top:
            break
        excluded.append(layout.chosen(layout.config(top[0], ref)))
        found.append((layout.config(top[0], ref), predicted(ctx.objective, mean, top[0])))
    return found


def predicted(objective: Objective, models: Mapping[str, Linear], z: np.ndarray) -> list[float]:
    """The objective value(s) `models` predict for solution `z`."""
    if objective.single:
        return [sum(m.scale * models[m.name](z) for m in objective.metrics)]
    return [models[m.name](z) for m in objective.metrics]


def honesty(pairs: Sequence[tuple[float, float]]) -> dict[str, float]:
    """R² and the largest miss of predicted against measured values."""
    pred, meas = np.array(pairs, dtype=float).T
    total = float(((meas - meas.mean()) ** 2).sum())
    r2 = 1.0 - float(((meas - pred) ** 2).sum()) / total if total > 0 else float("nan")
    return {"r2": r2, "max_miss": float(np.abs(meas - pred).max()), "n": float(len(pairs))}


def report_fit(ctx: SearchContext) -> None:
    pairs = [(t.user_attrs[PREDICTED][0], t.values[0]) for t in ctx.store.ended()
             if PREDICTED in t.user_attrs and t.values]  # fmt: skip
    if len(pairs) < 2:
        return
    found = honesty(pairs)
    ctx.store.set_study_attr(FIT_ATTR, found)
    ctx.notify(f"ilp: {fit_text(found)}")


def warm_start(ctx: SearchContext, limit: int) -> list[Config]:
    """For an Optuna sampler to start from: a dry lazy survey (its probes evaluated, not
    trials), then the best predicted candidates besides the probes, at most `limit` (and WARM)
    of them: what an `ilp` search's first round evaluates first."""
    scorer = Scorer(ctx, recorded=False)
    scorer.left = 1 + probe_count(ctx.space)
    basis = start(ctx, scorer)
    if basis is None:
        return []
    settle(basis, 1, BATCH)  # probes as an `ilp` search's
    found = [c for c, _ in propose(basis, 1, min(limit, WARM))]
    ctx.notify(f"warm start: {scorer.evaluated} ilp probes evaluated (not trials), "
               f"{len(found)} predicted best candidates queued")  # fmt: skip
    return found


def _key(config: Mapping[str, Choice]) -> tuple:
    return tuple(sorted(config.items()))


STRATEGIES.register("ilp")(Ilp())
