"""`bitscout.compare(model, data, space, strategies=...)` and `bitscout compare CONFIG`:
several strategies x seeds on one space through one evaluation cache, scored against the true
optimum wherever the space is small enough to enumerate. The CLI maps its TOML onto `Job` and
calls `compare_job`, the same code as the Python function."""

import dataclasses
import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.study import StudyDirection
from rich.console import Console
from rich.progress import track
from torch import nn

from bitscout._core.files import SCHEMA_VERSION, output_dir
from bitscout.analysis.compare_provenance import provenance, python_record
from bitscout.analysis.compare_spec import (
    BUDGETS,
    DEFAULT_STRATEGIES,
    KNOWN,
    OURS,
    WITHIN,
    check_compare,
    parse_budgets,
    parse_strategies,
    parse_within,
)
from bitscout.analysis.compare_stats import median, summarize
from bitscout.data.containers import MAX_BYTES, prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import Evaluator, LossFn
from bitscout.evaluate.forward import floating_dtype
from bitscout.objective import Objective, objective_from, sign
from bitscout.quant.apply import copy_model
from bitscout.quant.space import SearchSpace
from bitscout.results.compare_out import COLUMNS, CompareResult, show, write_outputs
from bitscout.results.console import log_console
from bitscout.results.ranking import best_so_far
from bitscout.results.trials import quiet_optuna
from bitscout.study.inputs import read_space, user_metrics
from bitscout.study.run import Job, make_evaluator, test_evaluator
from bitscout.study.settings import StrategySettings, python_settings
from bitscout.study.store.base import FEASIBLE, TrialRecord
from bitscout.study.store.optuna_store import OptunaStore
from bitscout.study.strategies import STRATEGIES, SearchContext

__all__ = ["COLUMNS", "KNOWN", "CompareResult", "Runs", "check_compare", "compare",
           "compare_job", "parse_strategies", "summarize"]  # fmt: skip

ENUMERABLE_MAX = 100_000  # enumerate the space for the optimum only up to this many candidates
SINGLE_KEY = "search.strategy.setup.sum_scaled_metrics"


@dataclasses.dataclass(frozen=True)
class Runs:
    """What to compare: the strategies, seeds 0..repeats-1, trials per run (None: the
    settings' n_trials, else the whole space), the threshold (percent) and the budgets."""

    labels: Sequence[str]
    repeats: int
    trials: int | None = None
    within: float = WITHIN
    budgets: tuple[int, ...] = BUDGETS


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
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """compare.csv rows of one run, and its final pick (the first trial with its best).
    Only feasible trials count towards the best so far."""
    values = np.array([t.values[0] if t.values else math.nan for t in trials], dtype=float)
    ok = np.array([t.user_attrs.get(FEASIBLE, True) for t in trials], dtype=bool)
    best = best_so_far(values, ok & np.isfinite(values), objective.direction)
    rows: list[dict[str, Any]] = []
    pick: dict[str, Any] = {"strategy": label, "seed": seed, "trial": None, "config": None,
                            "validation": None, "test": None}  # fmt: skip
    for position, (t, value, running) in enumerate(zip(trials, values, best, strict=True), 1):
        known = None if np.isnan(running) else float(running)
        regret = None if optimum is None or known is None else abs(optimum - known)
        config = json.dumps(t.params, sort_keys=True, separators=(",", ":"))
        cells = (SCHEMA_VERSION, label, seed, position, config, float(value), known, regret)
        rows.append(dict(zip(COLUMNS, cells, strict=True)))
        if known is not None and known != pick["validation"]:
            pick.update(trial=position, config=dict(t.params), validation=known)
    return rows, pick


def run_all(
    runs: Runs,
    setup: tuple[SearchSpace, Evaluator, StrategySettings, int],
    optimum: float | None,
    console: Console,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every strategy and seed: compare.csv's rows and each run's final pick."""
    space, evaluator, settings, n_trials = setup
    rows: list[dict[str, Any]] = []
    picks: list[dict[str, Any]] = []
    for label in runs.labels:
        for seed in range(runs.repeats):
            done = run_one(space, evaluator, run_settings(settings, label, seed, n_trials))
            got, pick = run_rows(label, seed, done, settings.objective, optimum)
            best = pick["validation"]
            shown = "none feasible" if best is None else f"best {best:.6g}"
            console.print(f"{label} seed {seed}: {len(got)} trials, {shown}", highlight=False)
            rows += got
            picks.append(pick)
    return rows, picks


def score_on_test(job: Job, evaluator: Evaluator, picks: list[dict[str, Any]]) -> bool:
    """Each run's final pick scored once on the test split (a pick several runs share is
    evaluated once); False when the job has no test split."""
    judge = test_evaluator(job, evaluator)
    if judge is None:
        return False
    objective = job.settings.objective
    for pick in picks:
        if pick["config"] is not None:
            metrics, _ = judge.evaluate(pick["config"])
            pick["test"] = objective.values(metrics)[0]
    return True


def reference(optimum: float | None, picks: Sequence[dict[str, Any]],
              objective: Objective) -> float | None:  # fmt: skip
    """What the plot measures each run against: the optimum, else the best any run found."""
    found = [p["validation"] for p in picks if p["validation"] is not None]
    if optimum is not None or not found:
        return optimum
    return max(found, key=lambda v: sign(objective.direction) * v)


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
    runs: Runs,
    out: Path | None,
    title: str,
    console: Console,
    record: Mapping[str, Any] | None = None,
) -> CompareResult:
    """Run every strategy with seeds 0..repeats-1 on `job`'s model, data and space through one
    evaluator; score each run's final pick on the job's test split, if any; with `out`, write
    compare.csv, compare.md, compare.json and plots/compare.png there. `record`: the command,
    its options and the model's source, for the provenance."""
    space, settings = job.space, job.settings
    evaluator = make_evaluator(job)
    n_trials = runs.trials or settings.n_trials or space.size
    optimum = find_optimum(space, evaluator, settings.objective, console)
    console.print(
        f"comparing {', '.join(runs.labels)} with seeds 0..{runs.repeats - 1}: "
        f"{n_trials} trials each on {space.size} candidates"
    )
    rows, picks = run_all(runs, (space, evaluator, settings, n_trials), optimum, console)
    tested = score_on_test(job, evaluator, picks)
    summary = summarize(rows, runs.labels, range(runs.repeats), optimum, budgets=runs.budgets,
                        within=runs.within, reference=reference(optimum, picks,
                        settings.objective))  # fmt: skip
    for entry in summary:
        mine = [p["test"] for p in picks if p["strategy"] == entry["strategy"]]
        entry["final_test"] = median(mine) if tested else None
    result = CompareResult(rows, summary, optimum, len(evaluator.cache), picks=picks,
                           provenance=provenance(job, record or {}, n_trials))  # fmt: skip
    header = facts(space, settings.objective, result)
    if out is not None:
        # wrapped: a long list of strategies would run off the figure
        heading = textwrap.fill(f"{title}: {', '.join(runs.labels)} ({runs.repeats} seeds)", 70)
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
    within: float = WITHIN,
    budgets: Sequence[int] | str = BUDGETS,
    out: str | Path | None = None,
    test_data: Any = None,
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
            "greedy", "greedy-tpe", "ilp", "ilp-tpe" (TPE warm-started by the ILP's solutions)
            or an Optuna sampler's name ("tpe", "random", ...); a list or a comma-separated
            string. Default "bruteforce", "random" and "tpe".
        repeats: seeds 0..repeats-1 per strategy (default 3).
        trials: trials per run (default: the whole space).
        within: "near the optimum" is within this many percent of |optimum|, in (0, 100]
            (default 1).
        budgets: increasing trial counts at which the median best so far is reported (a
            list or a comma-separated string; default 50, 100, 200, 500, 1000).
        out: write compare.csv, compare.md, compare.json and plots/compare.png there; None
            writes nothing.
        test_data: held-out data (the forms of `data`): each run's final pick is scored on it
            once, beside its validation score.
        metrics: your own metrics, as `bitscout.search` takes them.
        loss_fn: `loss_fn(outputs, targets)`, a batch mean, instead of cross-entropy.
        device: where candidates are evaluated.
        max_data_bytes: the most validation data held in memory.
        show: print the progress and the table on stdout (else to the "bitscout" logger).

    Returns:
        A CompareResult: `frame` (compare.csv's rows as a DataFrame), `summary` per strategy
        (trials to the optimum as a Kaplan-Meier median over seeds, with the fraction that got
        there), `optimum` (None when not enumerated), `evaluated`, `picks` (each run's final
        pick, with its test score), `provenance` and `files` written.

    Raises:
        ConfigError: `model` is not an `nn.Module`, an unknown strategy, a bad `repeats`,
            `trials`, `within` or `budgets`, a Pareto objective, or a bad space or metric.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError("model", "must be a torch.nn.Module", type(model).__name__)
    labels = check_compare(strategies, repeats, trials, str)
    runs = Runs(labels, repeats, trials, parse_within(within, "within"),
                parse_budgets(budgets, "budgets"))  # fmt: skip
    extra = user_metrics(metrics)
    default = {"loss": -1.0} if loss_fn is not None else {"accuracy": 1.0}
    weights = default if objective is None else objective
    goal = objective_from(weights, constraints, extra)
    check_single(goal, "objective")
    settings = python_settings("bruteforce", goal)  # each run's strategy and seed are set later
    dtype = floating_dtype(model)
    where = None if out is None else output_dir(out, "out")
    held = lambda d: prepare(d, dtype=dtype, device=device, max_bytes=max_data_bytes)  # noqa: E731
    job = Job(copy_model(model).eval(), held(data), read_space(space, model), settings,
              metrics=extra, loss_fn=loss_fn,
              test_data=None if test_data is None else held(test_data))  # fmt: skip
    options = {"objective": weights, "constraints": list(constraints), "strategies": labels,
               "repeats": repeats, "trials": trials, "within": runs.within,
               "budgets": list(runs.budgets), "out": None if where is None else str(where),
               "device": str(device), "max_data_bytes": max_data_bytes}  # fmt: skip
    record = python_record(space, options, extra, loss_fn)
    console = Console() if show else log_console()
    return compare_job(job, runs, where, type(model).__name__, console, record)
