"""`greedy`: AIMET-style automatic mixed precision. Start with every width at its most precise
choice; at each step evaluate every single move one choice down (one width dimension, one
choice) and take the one that costs the objective least, until `n_trials` or the lowest
choices. Every evaluated candidate is a trial; the path is the study's `greedy_path` attr.

Width dimensions (`data_in_width`, `weight_width`, `bias_width`, `accum_width`,
`result_width`) are ordered by value. Every other dimension (frac widths, rounding, exponent
bias, ...) is not a precision, so it is set once, before the walk: each in turn takes its
best choice with the widths at their most precise."""

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from bitscout.errors import ConfigError
from bitscout.objective import Objective, sign
from bitscout.quant.space import Choice, Config, Dimension, SearchSpace
from bitscout.results.trials import Result
from bitscout.study.settings import StrategySettings
from bitscout.study.store.base import HEARTBEAT, STEP, Leased
from bitscout.study.store.liveness import Heartbeat
from bitscout.study.strategies.base import STRATEGIES, SearchContext, Strategy

WIDTH_FIELDS = ("data_in_width", "weight_width", "bias_width", "accum_width", "result_width")
PATH_ATTR = "greedy_path"  # study user attr: the trial number of each step's chosen candidate
LEASE = "greedy"  # what a walker leases: its study's walk


def is_width(d: Dimension) -> bool:
    numeric = all(isinstance(c, int) and not isinstance(c, bool) for c in d.choices)
    return d.field in WIDTH_FIELDS and numeric


def descending(d: Dimension) -> list[Choice]:
    """A width dimension's choices, most precise first."""
    return sorted(d.choices, reverse=True)


def walk_bound(space: SearchSpace) -> int:
    """At most how many candidates a whole walk evaluates: the sweep of the other dimensions,
    then per step one move per width dimension."""
    widths = [d for d in space.dimensions if is_width(d)]
    steps = sum(len(d.choices) - 1 for d in widths)
    others = sum(len(d.choices) for d in space.dimensions if not is_width(d))
    return min(space.size, 1 + others + steps * len(widths))


class Walk:
    """Scores configs through the store: a config already ended there (a resumed walk) is
    not recorded again, so a walk interrupted anywhere resumes with nothing repeated."""

    def __init__(self, ctx: SearchContext, *, recorded: bool = True) -> None:
        self.ctx = ctx
        self.recorded = recorded  # False: a dry walk, which adds no trials to the store
        self.known = {_key(t.params): t.number for t in ctx.store.ended()}
        self.left = ctx.budget() if recorded else walk_bound(ctx.space)
        self.evaluated = 0

    def score(self, configs: Sequence[Config], step: int) -> list[tuple[int, Result]]:
        """(trial number, result) per config, until the budget is spent (maybe fewer)."""
        fresh = [c for c in configs if _key(c) not in self.known]
        if len(fresh) > self.left:
            configs = [c for c in configs if _key(c) in self.known or c in fresh[: self.left]]
        out = []
        for config, result in zip(configs, self.ctx.score_many(configs), strict=True):
            key = _key(config)
            if key not in self.known:
                number = self._record(config, result, step)
                self.known[key], self.left, self.evaluated = (
                    number,
                    self.left - 1,
                    self.evaluated + 1,
                )
            out.append((self.known[key], result))
        return out

    def _record(self, config: Config, result: Result, step: int) -> int:
        if not self.recorded:
            return -1
        number = self.ctx.store.record(config, result, {STEP: step})
        self.ctx.on_trial(number, config, result)
        return number

    def best(self, configs: Sequence[Config], step: int) -> tuple[int, Config] | None:
        """The trial number and config of the best of `configs` (None: the budget ran out
        before all of them were scored, so the best is not known)."""
        scored = self.score(configs, step)
        if len(scored) < len(configs):
            return None
        rank = lambda i: _rank(self.ctx.objective, scored[i][1])  # noqa: E731
        i = min(range(len(scored)), key=rank)
        return scored[i][0], configs[i]


class Greedy(Strategy):
    def check(self, space: SearchSpace, settings: StrategySettings) -> None:
        check_space(space, settings)

    def default_target(self, space: SearchSpace) -> int:
        return walk_bound(space)

    def run(self, ctx: SearchContext) -> None:
        with ctx.store.writing(), _alone(ctx):
            walk = Walk(ctx)  # after the lease: it sees every trial an earlier walker ended
            path: list[int] = []
            for number, _ in trajectory(ctx.space, walk):
                path.append(number)
                ctx.store.set_study_attr(PATH_ATTR, path)


@contextlib.contextmanager
def _alone(ctx: SearchContext) -> Iterator[None]:
    """Walk only while no other worker walks the study: two walkers would score the same
    moves twice and write each other's path. The walker holding the lease beats its
    heartbeat into it, so a walker that died is seen and its study walked on."""
    try:
        ref = ctx.store.lease(LEASE)
    except Leased as held:
        rule = (f"is being walked by the greedy worker {held.worker}, which walks one path "
                "alone: wait for it to end (this command then resumes its walk) or use "
                "another --study")  # fmt: skip
        raise ConfigError("--study", f"study {ctx.store.study.study_name!r} {rule}") from None
    try:
        with Heartbeat() as heartbeat:
            heartbeat.watch(lambda now: ctx.store.set_attr(ref, HEARTBEAT, now))
            yield
    finally:
        ctx.store.release(ref)


def warm_start(ctx: SearchContext, limit: int) -> list[Config]:
    """For an Optuna sampler to start from: the chosen candidates of a dry greedy walk (no
    trials), at most `limit` of them spread evenly along it, first and last included."""
    walk = Walk(ctx, recorded=False)
    path = [config for _, config in trajectory(ctx.space, walk)]
    ctx.notify(f"warm start: a greedy walk of {len(path)} steps evaluated {walk.evaluated} "
               "candidates (not trials)")  # fmt: skip
    if len(path) <= limit:
        return path
    if limit == 1:
        return path[:1]
    return [path[round(i * (len(path) - 1) / (limit - 1))] for i in range(limit)]


def check_space(space: SearchSpace, settings: StrategySettings) -> None:
    key = "search.strategy.name"
    if space.mixed:
        rule = "walks widths down within one format: use one format per layer, or bruteforce"
        raise ConfigError(key, f"greedy {rule}", "greedy")
    if settings.n_jobs > 1:
        rule = "must be 1 for greedy, which walks one path (use shuffled bruteforce to share)"
        raise ConfigError("search.strategy.setup.n_jobs", rule, settings.n_jobs)


def trajectory(space: SearchSpace, walk: Walk) -> Iterator[tuple[int, Config]]:
    """The walk's chosen candidates in order (trial number, config), from the most precise."""
    dims = space.dimensions
    current: Config = {d.name: descending(d)[0] if is_width(d) else d.choices[0] for d in dims}
    for d in (d for d in dims if not is_width(d) and len(d.choices) > 1):
        found = walk.best([{**current, d.name: c} for c in d.choices], 0)
        if found is None:
            return
        current = found[1]
    start = walk.score([current], 0)
    if not start:
        return
    yield start[0][0], current
    step = 1
    while moves := _moves(dims, current):
        found = walk.best(moves, step)
        if found is None:
            return
        yield found
        current, step = found[1], step + 1


def _moves(dims: Sequence[Dimension], current: Mapping[str, Choice]) -> list[Config]:
    """Every config one width choice below `current` in one dimension."""
    moves = []
    for d in dims:
        if not is_width(d):
            continue
        order = descending(d)
        at = order.index(current[d.name])
        if at + 1 < len(order):
            moves.append({**current, d.name: order[at + 1]})
    return moves


def _rank(objective: Objective, result: Result) -> tuple:
    """Sort key, best first: ran, feasible, then the (first) objective value."""
    if result.failure is not None:
        return (1, 1, 0.0)
    value = result.values[0]
    signed = -sign(objective.directions[0]) * value
    return (0, 0 if result.feasible else 1, signed)


def _key(config: Mapping[str, Choice]) -> tuple:
    return tuple(sorted(config.items()))


STRATEGIES.register("greedy")(Greedy())
