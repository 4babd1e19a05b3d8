"""The comparison's statistics over seeds: best so far and regret per trial (median and
interquartile range), the best at fixed budgets, and the trials each strategy needs to reach
the optimum (or come within a threshold of it) as a censored statistic: a seed that never
reached it within its run counts as beyond its run's length, not as absent."""

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from bitscout.analysis.compare_spec import BUDGETS, WITHIN

TOL = 1e-12  # relative: a regret this small is float noise, not a miss
HALF_TOL = 1e-9  # a survival this close to one half is exactly one half (R's survfit rule)
NO_REGRET = dict.fromkeys(
    ("regret", "trials_to_optimum", "never_optimum", "reached_optimum", "trials_to_within",
     "never_within", "reached_within", "regret_auc")
)  # fmt: skip


def km_median(hits: Sequence[int | None], lengths: Sequence[int]) -> float | None:
    """The Kaplan-Meier median of the trials to an event: `hits[i]` the trial at which seed i
    got there (None: never, censored at its run's length `lengths[i]`). Where the survival
    curve is exactly one half over an interval, its midpoint (so with no censoring this is the
    ordinary median); None when the curve never falls to one half: more than half the seeds
    are still beyond their budget."""
    times = [length if hit is None else hit for hit, length in zip(hits, lengths, strict=True)]
    survival = 1.0
    steps: list[tuple[int, float]] = []
    for t in sorted({h for h in hits if h is not None}):
        at_risk = sum(1 for x in times if x >= t)  # a seed censored at t was still running
        survival *= 1 - hits.count(t) / at_risk
        steps.append((t, survival))
    for i, (t, s) in enumerate(steps):
        if abs(s - 0.5) <= HALF_TOL:  # flat at one half until the next event (or the end)
            following = steps[i + 1][0] if i + 1 < len(steps) else max(times)
            return (t + following) / 2
        if s < 0.5:
            return float(t)
    return None


def first_hits(regret: np.ndarray, bound: float) -> list[int | None]:
    """Per seed, the first (1-based) trial whose regret is within `bound`, or None."""
    hits: list[int | None] = []
    for row in regret:
        index = np.flatnonzero(row <= bound)  # NaN (nothing feasible yet) never hits
        hits.append(int(index[0]) + 1 if index.size else None)
    return hits


def censored(hits: Sequence[int | None], lengths: Sequence[int], name: str) -> dict[str, Any]:
    """`trials_to_<name>` (the Kaplan-Meier median, None beyond the budget), `never_<name>`
    and `reached_<name>` (the fraction of seeds that got there)."""
    never = sum(1 for h in hits if h is None)
    return {
        f"trials_to_{name}": km_median(hits, lengths),
        f"never_{name}": never,
        f"reached_{name}": (len(hits) - never) / len(hits) if hits else None,
    }


def curves(
    rows: Sequence[dict[str, Any]], label: str, seeds: Sequence[int], length: int
) -> np.ndarray:
    """Best so far, seeds x trials. A run shorter than `length` (a sampler that exhausted the
    space, such as grid) keeps its last best; NaN before any feasible trial."""
    table = np.full((len(seeds), length), np.nan)
    for i, seed in enumerate(seeds):
        run = [r["best_so_far"] for r in rows if r["strategy"] == label and r["seed"] == seed]
        values = [np.nan if v is None else v for v in run]
        table[i, : len(values)] = values
        if values:
            table[i, len(values) :] = values[-1]
    return table


def band(table: np.ndarray) -> dict[str, list[float]]:
    """Median, mean and interquartile range over seeds, per trial."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a trial where no seed is feasible yet
        return {
            "median": np.nanmedian(table, axis=0).tolist(),
            "mean": np.nanmean(table, axis=0).tolist(),
            "q25": np.nanquantile(table, 0.25, axis=0).tolist(),
            "q75": np.nanquantile(table, 0.75, axis=0).tolist(),
        }


def median(values: Iterable[float | None], reduce: Callable = np.median) -> float | None:
    """`reduce` of the known values (None when there is none)."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    return float(reduce(known)) if known else None


def regret_stats(
    regret: np.ndarray, optimum: float, lengths: Sequence[int], within: float
) -> dict[str, Any]:
    # Trials before the first feasible one have no regret and add nothing to the area; a
    # seed with no feasible trial at all has no area and is left out of the mean.
    areas = [float(np.nansum(r)) if np.isfinite(r).any() else None for r in regret]
    return {
        "regret": band(regret),
        **censored(first_hits(regret, TOL * abs(optimum)), lengths, "optimum"),
        **censored(first_hits(regret, within / 100 * abs(optimum)), lengths, "within"),
        "regret_auc": median(areas, np.mean),
    }


def summarize(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    seeds: Sequence[int],
    optimum: float | None,
    *,
    budgets: Sequence[int] = BUDGETS,
    within: float = WITHIN,
    reference: float | None = None,
) -> list[dict[str, Any]]:
    """One entry per strategy; the curves span the longest run of the whole comparison.
    `reference`: what the plot measures each best so far against (the optimum, else the best
    any run found); None draws the best so far itself."""
    length = max((r["trial"] for r in rows), default=0)
    summary = []
    for label in labels:
        best = curves(rows, label, seeds, length)
        trials = [sum(1 for r in rows if r["strategy"] == label and r["seed"] == s) for s in seeds]
        entry: dict[str, Any] = {
            "strategy": label,
            "seeds": len(seeds),
            "trials": trials,
            "within": within,
            "final_best": median(best[:, -1]) if length else None,
            "best_at": {n: median(best[:, n - 1]) for n in budgets if n <= length},
            "best_so_far": band(best),
            "gap": None if reference is None else band(np.abs(reference - best)),
        }
        if optimum is None:
            entry.update(NO_REGRET)
        else:
            entry.update(regret_stats(np.abs(optimum - best), optimum, trials, within))
        summary.append(entry)
    return summary
