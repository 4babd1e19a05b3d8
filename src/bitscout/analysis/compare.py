"""`bitscout compare`: several strategies x seeds on one space through one evaluation cache,
scored against the true optimum wherever the space is small enough to enumerate."""

import dataclasses
import json
import math
import textwrap
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from rich.console import Console
from rich.progress import track

from bitscout._core.files import SCHEMA_VERSION
from bitscout._core.validate import suggest
from bitscout.cli.build import Overrides, check_search, float_model, load_data, make_model
from bitscout.cli.config import Config
from bitscout.data.containers import prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import Evaluator
from bitscout.objective import Objective
from bitscout.quant.space import SearchSpace, parse_space
from bitscout.results.compare_out import BUDGETS, COLUMNS, CompareResult, show, write_outputs
from bitscout.results.ranking import best_so_far
from bitscout.results.trials import quiet_optuna
from bitscout.study.run import Job, make_evaluator
from bitscout.study.settings import SAMPLER_NAMES, StrategySettings
from bitscout.study.store.base import FEASIBLE, TrialRecord
from bitscout.study.store.optuna_store import OptunaStore
from bitscout.study.strategies import STRATEGIES, SearchContext

ENUMERABLE_MAX = 100_000  # enumerate the space for the optimum only up to this many candidates
TOL = 1e-12  # relative: a regret this small is float noise, not a miss
WITHIN = 0.01  # "near the optimum": within 1% of |optimum|
SINGLE_KEY = "search.strategy.setup.sum_scaled_metrics"
# Here `bruteforce` is our exhaustive strategy, so Optuna's sampler of that name is left out.
# Ours: label -> (strategy, brute-force order, warm start); every other label is a sampler.
OURS = {
    "bruteforce": ("bruteforce", "index", None),
    "bruteforce-reversed": ("bruteforce", "reversed", None),
    "shuffled": ("bruteforce", "shuffled", None),
    "greedy": ("greedy", "index", None),
    "greedy-tpe": ("optuna", "index", "greedy"),
}
KNOWN = (*OURS, *(s for s in SAMPLER_NAMES if s != "bruteforce"))
NO_REGRET = dict.fromkeys(
    ("regret", "trials_to_optimum", "never_optimum", "trials_to_1pct", "never_1pct", "regret_auc")
)


def parse_strategies(names: Sequence[str] | str) -> list[str]:
    """Validate `--strategies`; a comma-separated string is accepted as the CLI gives it."""
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names]
    if not names:
        raise ConfigError("--strategies", f"needs at least one strategy; known: {', '.join(KNOWN)}")
    for name in names:
        if name not in KNOWN:
            rule = f"unknown strategy{suggest(name, KNOWN)}; known: {', '.join(KNOWN)}"
            raise ConfigError("--strategies", rule, name)
    if len(set(names)) != len(names):
        raise ConfigError("--strategies", "must name each strategy once", ",".join(names))
    return names


def check_compare(
    cfg: Config, strategies: Sequence[str] | str, repeats: int, trials: int | None
) -> tuple[list[str], StrategySettings]:
    """Everything `run_compare` refuses, checked before any work is done."""
    labels = parse_strategies(strategies)
    for key, value in (("--repeats", repeats), ("--trials", 1 if trials is None else trials)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(key, "must be an integer >= 1", value)
    settings = check_search(cfg, Overrides())
    if not settings.objective.single:  # regret and best-so-far need one order on candidates
        raise ConfigError(SINGLE_KEY, "compare needs a single objective (true)", False)
    return labels, settings


def run_settings(
    settings: StrategySettings, label: str, seed: int, n_trials: int
) -> StrategySettings:
    """One run's settings. No timeout and one job: either would make runs irreproducible."""
    name, order, warm = OURS.get(label, ("optuna", "index", None))
    sampler = "tpe" if label in OURS else label
    # one trial per candidate: the curves are read from the trials
    fixed = {"seed": seed, "n_trials": n_trials, "timeout": None, "n_jobs": 1, "chunked": False}
    return dataclasses.replace(settings, name=name, sampler=sampler, order=order,
                               warm_start=warm, **fixed)  # fmt: skip


@quiet_optuna()
def run_one(
    space: SearchSpace, evaluator: Evaluator, settings: StrategySettings
) -> list[TrialRecord]:
    """Run one strategy and seed in a fresh in-memory study; its complete trials in order."""
    strategy = STRATEGIES.get(settings.name, "--strategies")
    objective = settings.objective
    sampler = strategy.sampler(settings, space, objective)
    study = optuna.create_study(directions=objective.directions, sampler=sampler)  # in memory
    store = OptunaStore(study, space)
    strategy.run(SearchContext(space, evaluator, objective, settings, store))
    return store.done()


def enumerate_optimum(
    space: SearchSpace, evaluator: Evaluator, objective: Objective, console: Console
) -> float | None:
    """The best feasible objective over every candidate (None if none is feasible). Through
    the shared cache, so a brute-force run afterwards costs nothing more."""
    best: float | None = None
    indexes = track(range(space.size), description="enumerating", console=console, transient=True)
    for index in indexes:
        metrics, _ = evaluator.evaluate(space.config(index))
        value = objective.values(metrics)[0]
        if not objective.feasible(metrics) or not math.isfinite(value):
            continue
        if best is None or objective.better(value, best):
            best = value
    return best


def find_optimum(
    space: SearchSpace, evaluator: Evaluator, objective: Objective, console: Console
) -> float | None:
    if space.size > ENUMERABLE_MAX:
        console.print(
            f"space of {space.size} candidates is too large to enumerate: "
            "comparing best-so-far without regret"
        )
        return None
    optimum = enumerate_optimum(space, evaluator, objective, console)
    if optimum is None:
        console.print("no candidate of the space is feasible: comparing without regret")
    return optimum


def run_rows(
    label: str,
    seed: int,
    trials: Sequence[TrialRecord],
    objective: Objective,
    optimum: float | None,
) -> list[dict[str, Any]]:
    """compare.csv rows of one run. Only feasible trials count towards the best so far."""
    values = np.array([t.values[0] if t.values else math.nan for t in trials], dtype=float)
    ok = np.array([t.user_attrs.get(FEASIBLE, True) for t in trials], dtype=bool)
    best = best_so_far(values, ok & np.isfinite(values), objective.direction)
    rows: list[dict[str, Any]] = []
    for position, (t, value, running) in enumerate(zip(trials, values, best, strict=True), 1):
        known = None if np.isnan(running) else float(running)
        regret = None if optimum is None or known is None else abs(optimum - known)
        config = json.dumps(t.params, sort_keys=True, separators=(",", ":"))
        cells = (SCHEMA_VERSION, label, seed, position, config, float(value), known, regret)
        rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows


def run_all(
    labels: Sequence[str],
    repeats: int,
    runs: tuple[SearchSpace, Evaluator, StrategySettings, int],
    optimum: float | None,
    console: Console,
) -> list[dict[str, Any]]:
    space, evaluator, settings, n_trials = runs
    rows: list[dict[str, Any]] = []
    for label in labels:
        for seed in range(repeats):
            done = run_one(space, evaluator, run_settings(settings, label, seed, n_trials))
            got = run_rows(label, seed, done, settings.objective, optimum)
            best = got[-1]["best_so_far"] if got else None
            shown = "none feasible" if best is None else f"best {best:.6g}"
            console.print(f"{label} seed {seed}: {len(got)} trials, {shown}", highlight=False)
            rows += got
    return rows


def _curves(
    rows: Sequence[dict[str, Any]], label: str, seeds: Sequence[int], length: int
) -> np.ndarray:
    """Best so far, seeds x trials. A run shorter than `length` (a sampler that exhausted the
    space, such as grid) keeps its last best; NaN before any feasible trial."""
    curves = np.full((len(seeds), length), np.nan)
    for i, seed in enumerate(seeds):
        run = [r["best_so_far"] for r in rows if r["strategy"] == label and r["seed"] == seed]
        values = [np.nan if v is None else v for v in run]
        curves[i, : len(values)] = values
        if values:
            curves[i, len(values) :] = values[-1]
    return curves


def _band(curves: np.ndarray) -> dict[str, list[float]]:
    """Mean and interquartile range over seeds, per trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a trial where no seed is feasible yet
        return {
            "mean": np.nanmean(curves, axis=0).tolist(),
            "q25": np.nanquantile(curves, 0.25, axis=0).tolist(),
            "q75": np.nanquantile(curves, 0.75, axis=0).tolist(),
        }


def _median(values: Iterable[float | None], reduce: Callable = np.median) -> float | None:
    """`reduce` of the known values (None when there is none)."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    return float(reduce(known)) if known else None


def _first_hits(regret: np.ndarray, bound: float) -> list[int | None]:
    """Per seed, the first (1-based) trial whose regret is within `bound`, or None."""
    hits: list[int | None] = []
    for row in regret:
        index = np.flatnonzero(row <= bound)  # NaN (nothing feasible yet) never hits
        hits.append(int(index[0]) + 1 if index.size else None)
    return hits


def _regret_stats(regret: np.ndarray, optimum: float) -> dict[str, Any]:
    to_opt = _first_hits(regret, TOL * abs(optimum))
    to_near = _first_hits(regret, WITHIN * abs(optimum))
    # Trials before the first feasible one have no regret and add nothing to the area; a
    # seed with no feasible trial at all has no area and is left out of the mean.
    areas = [float(np.nansum(r)) if np.isfinite(r).any() else None for r in regret]
    return {
        "regret": _band(regret),
        "trials_to_optimum": _median(to_opt),
        "never_optimum": to_opt.count(None),
        "trials_to_1pct": _median(to_near),
        "never_1pct": to_near.count(None),
        "regret_auc": _median(areas, np.mean),
    }


def summarize(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    seeds: Sequence[int],
    optimum: float | None,
) -> list[dict[str, Any]]:
    """One entry per strategy; the curves span the longest run of the whole comparison."""
    length = max((r["trial"] for r in rows), default=0)
    summary = []
    for label in labels:
        best = _curves(rows, label, seeds, length)
        trials = [sum(1 for r in rows if r["strategy"] == label and r["seed"] == s) for s in seeds]
        entry: dict[str, Any] = {
            "strategy": label,
            "seeds": len(seeds),
            "trials": trials,
            "final_best": _median(best[:, -1]) if length else None,
            "best_at": {n: _median(best[:, n - 1]) for n in BUDGETS if n <= length},
            "best_so_far": _band(best),
        }
        known = optimum is not None
        entry.update(_regret_stats(np.abs(optimum - best), optimum) if known else NO_REGRET)
        summary.append(entry)
    return summary


def facts(space: SearchSpace, objective: Objective, result: CompareResult) -> str:
    if result.optimum is not None:
        optimum = f"optimum ({objective.direction}) {result.optimum:.6g}"
    elif space.size > ENUMERABLE_MAX:
        optimum = f"optimum unknown (more than {ENUMERABLE_MAX} candidates to enumerate)"
    else:
        optimum = "optimum unknown (no feasible candidate)"
    evaluated = f"{result.evaluated} distinct configs evaluated"
    return f"space of {space.size} candidates; {optimum}; {evaluated}"


def run_compare(
    cfg: Config,
    strategies: Sequence[str],
    repeats: int,
    out: Path,
    console: Console,
    *,
    trials: int | None = None,
    load: str | Path | None = None,
) -> CompareResult:
    """Run every strategy with seeds 0..repeats-1 and write compare.csv, compare.md and
    plots/compare.png into `out`."""
    labels, settings = check_compare(cfg, strategies, repeats, trials)
    data = load_data(cfg, console)
    space = parse_space(cfg.search.get("search_space", {}), make_model(cfg, data))
    out.mkdir(parents=True, exist_ok=True)  # only once the whole config is known good
    model, _ = float_model(cfg, data, load, out, console)
    n = settings.num_samples or len(data.y_val)
    job = Job(model, prepare((data.x_val[:n], data.y_val[:n])), space, settings)
    evaluator = make_evaluator(job)
    n_trials = trials or settings.n_trials or space.size
    optimum = find_optimum(space, evaluator, settings.objective, console)
    console.print(
        f"comparing {', '.join(labels)} with seeds 0..{repeats - 1}: "
        f"{n_trials} trials each on {space.size} candidates"
    )
    runs = (space, evaluator, settings, n_trials)
    rows = run_all(labels, repeats, runs, optimum, console)
    summary = summarize(rows, labels, range(repeats), optimum)
    result = CompareResult(rows, summary, optimum, len(evaluator.cache))
    header = facts(space, settings.objective, result)
    # wrapped: a long list of strategies would run off the figure
    title = textwrap.fill(f"{cfg.model} on {cfg.dataset}: {', '.join(labels)} ({repeats} seeds)",
                          70)  # fmt: skip
    write_outputs(out, result, header, title)
    show(console, summary, header)
    console.print(f"outputs in {out}")
    return result
