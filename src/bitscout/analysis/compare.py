"""`bitscout.compare(model, data, space, strategies=...)` and `bitscout compare CONFIG`:
several strategies x seeds on one space through one evaluation cache, scored against the true
optimum wherever the space is small enough to enumerate. The CLI maps its TOML onto `Job` and
calls `compare_job`, the same code as the Python function."""

import copy
import dataclasses
import json
import math
import textwrap
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.study import StudyDirection
from rich.console import Console
from rich.progress import track
from torch import nn

from bitscout._core.files import SCHEMA_VERSION
from bitscout._core.validate import suggest
from bitscout.data.containers import MAX_BYTES, prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import Evaluator, LossFn
from bitscout.objective import Objective, objective_from
from bitscout.quant.space import SearchSpace
from bitscout.results.compare_out import BUDGETS, COLUMNS, CompareResult, show, write_outputs
from bitscout.results.console import log_console
from bitscout.results.ranking import best_so_far
from bitscout.results.trials import quiet_optuna
from bitscout.study.inputs import read_space, user_metrics
from bitscout.study.run import Job, make_evaluator
from bitscout.study.settings import SAMPLER_NAMES, StrategySettings, python_settings
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
DEFAULT_STRATEGIES = ("bruteforce", "random", "tpe")
Flag = Callable[[str], str]  # an argument's name as the door that took it spells it
NO_REGRET = dict.fromkeys(
    ("regret", "trials_to_optimum", "never_optimum", "trials_to_1pct", "never_1pct", "regret_auc")
)


def parse_strategies(names: Sequence[str] | str, key: str = "--strategies") -> list[str]:
    """Validate `strategies`; a comma-separated string is accepted as the CLI gives it."""
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names]
    if not names:
        raise ConfigError(key, f"needs at least one strategy; known: {', '.join(KNOWN)}")
    for name in names:
        if name not in KNOWN:
            rule = f"unknown strategy{suggest(name, KNOWN)}; known: {', '.join(KNOWN)}"
            raise ConfigError(key, rule, name)
    if len(set(names)) != len(names):
        raise ConfigError(key, "must name each strategy once", ",".join(names))
    return names


def check_compare(
    strategies: Sequence[str] | str,
    repeats: int,
    trials: int | None,
    flag: Flag = lambda name: f"--{name}",
) -> list[str]:
    """The strategies, repeats and trials `compare_job` takes, checked before any work."""
    labels = parse_strategies(strategies, flag("strategies"))
    for key, value in (("repeats", repeats), ("trials", 1 if trials is None else trials)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(flag(key), "must be an integer >= 1", value)
    return labels


def check_single(objective: Objective, key: str = SINGLE_KEY) -> None:
    """Regret and best-so-far need one order on candidates: one weighted objective."""
    if not objective.single:
        rule = "compare needs a single objective (true)" if key == SINGLE_KEY else (
            "compare needs a single objective: a {metric: scale} dict")  # fmt: skip
        raise ConfigError(key, rule, False if key == SINGLE_KEY else None)


def run_settings(
    settings: StrategySettings, label: str, seed: int, n_trials: int
) -> StrategySettings:
    """One run's settings. No timeout and one job: either would make runs irreproducible."""
    name, order, warm = OURS.get(label, ("optuna", "index", None))
    sampler = "tpe" if label in OURS else label
    # one trial per candidate (not chunked): the curves are read from the trials
    return dataclasses.replace(settings, name=name, sampler=sampler, order=order,
                               warm_start=warm, seed=seed, n_trials=n_trials, timeout=None,
                               n_jobs=1, chunked=False)  # fmt: skip


@quiet_optuna()
def run_one(
    space: SearchSpace, evaluator: Evaluator, settings: StrategySettings
) -> list[TrialRecord]:
    """Run one strategy and seed in a fresh in-memory study; its complete trials in order."""
    strategy = STRATEGIES.get(settings.name, "--strategies")
    objective = settings.objective
    sampler = strategy.sampler(settings, space, objective)
    directions = [StudyDirection[d.upper()] for d in objective.directions]
    study = optuna.create_study(directions=directions, sampler=sampler)  # in memory
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
        if optimum is None:
            entry.update(NO_REGRET)
        else:
            entry.update(_regret_stats(np.abs(optimum - best), optimum))
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


def compare_job(
    job: Job,
    labels: Sequence[str],
    repeats: int,
    trials: int | None,
    out: Path | None,
    title: str,
    console: Console,
) -> CompareResult:
    """Run every strategy with seeds 0..repeats-1 on `job`'s model, data and space through one
    evaluator; with `out`, write compare.csv, compare.md and plots/compare.png there."""
    space, settings = job.space, job.settings
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
    if out is not None:
        # wrapped: a long list of strategies would run off the figure
        heading = textwrap.fill(f"{title}: {', '.join(labels)} ({repeats} seeds)", 70)
        result = dataclasses.replace(result, files=write_outputs(out, result, header, heading))
    show(console, summary, header)
    if out is not None:
        console.print(f"outputs in {out}")
    return result


def compare(
    model: nn.Module,
    data: Any,
    space: Mapping[str, Any] | str | Path,
    *,
    objective: Mapping[str, Any] | None = None,
    constraints: Sequence[str] = (),
    strategies: Sequence[str] | str = DEFAULT_STRATEGIES,
    repeats: int = 3,
    trials: int | None = None,
    out: str | Path | None = None,
    metrics: Mapping[str, Any] | None = None,
    loss_fn: LossFn | None = None,
    device: str | torch.device = "cpu",
    max_data_bytes: int = MAX_BYTES,
    show: bool = False,
) -> CompareResult:
    """Compare search strategies over seeds on one model, data and space, as `bitscout compare
    CONFIG` does: every candidate is evaluated once for all runs, and where the space has at
    most 100,000 candidates each run is scored against the true optimum (regret).

    Args:
        model: any float `nn.Module`; never modified.
        data: the validation data, in the forms `bitscout.search` takes.
        space: the `[search.search_space]` table as a dict, or a TOML file holding it.
        objective: `{metric: scale}`, one weighted sum maximized (default `{"accuracy": 1.0}`;
            with `loss_fn`, `{"loss": -1.0}`). A Pareto objective is refused: regret needs one
            order on candidates.
        constraints: strings such as `"accuracy >= 0.9"`.
        strategies: labels to compare: "bruteforce", "bruteforce-reversed", "shuffled",
            "greedy", "greedy-tpe" or an Optuna sampler's name ("tpe", "random", ...).
        repeats: seeds 0..repeats-1 per strategy.
        trials: trials per run (default: the whole space).
        out: write compare.csv, compare.md and plots/compare.png there; None writes nothing.
        metrics: your own metrics, as `bitscout.search` takes them.
        loss_fn: `loss_fn(outputs, targets)`, a batch mean, instead of cross-entropy.
        device: where candidates are evaluated.
        max_data_bytes: the most validation data held in memory.
        show: print the progress and the table on stdout (else to the "bitscout" logger).

    Returns:
        A CompareResult: `frame` (compare.csv's rows as a DataFrame), `summary` per strategy,
        `optimum` (None when not enumerated), `evaluated`, and `files` written.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError("model", "must be a torch.nn.Module", type(model).__name__)
    labels = check_compare(strategies, repeats, trials, str)
    extra = user_metrics(metrics)
    default = {"loss": -1.0} if loss_fn is not None else {"accuracy": 1.0}
    goal = objective_from(default if objective is None else objective, constraints, extra)
    check_single(goal, "objective")
    settings = python_settings("bruteforce", goal)  # each run's strategy and seed are set later
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    where = None if out is None else Path(out)
    if where is not None and where.exists() and not where.is_dir():
        raise ConfigError("out", "names an existing file, not a directory", str(where))
    job = Job(copy.deepcopy(model).eval(),
              prepare(data, dtype=dtype, device=device, max_bytes=max_data_bytes),
              read_space(space, model), settings, metrics=extra, loss_fn=loss_fn)  # fmt: skip
    console = Console() if show else log_console()
    return compare_job(job, labels, repeats, trials, where, type(model).__name__, console)
