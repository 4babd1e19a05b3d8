"""The end of a search, computed once and then written, printed or returned: the trials
ranked by distinct config, the float model's metrics on the same rows, and the winners
evaluated once on the held-out test split."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bitscout.evaluate.evaluator import Evaluator
from bitscout.objective import Objective
from bitscout.quant.space import SearchSpace
from bitscout.results.outputs import row_config
from bitscout.results.ranking import distinct, entry, objective_columns, rescore, winners
from bitscout.results.schema import objective_spec
from bitscout.results.trials import TrialSource, trials_frame

TEST_MAX = 20  # winners evaluated on the test split (the best, or the first of a Pareto set)


@dataclass
class Concluded:
    """Everything the outputs show of a finished search."""

    frame: pd.DataFrame  # trials.csv's rows, every trial
    scored: pd.DataFrame  # the evaluated ones, rescored
    winners: pd.DataFrame  # distinct configs: the top 10 or the Pareto set
    baseline: dict[str, dict[str, float] | None]  # the float model: validation, test
    test: dict[str, Any] | None  # the winners on the test split
    counts: dict[str, int] = field(default_factory=dict)


def conclude(
    source: TrialSource,
    space: SearchSpace,
    objective: Objective,
    evaluator: Evaluator,
    test_evaluator: Evaluator | None = None,
) -> Concluded:
    dims = [d.name for d in space.dimensions]
    frame = trials_frame(source, space, objective, evaluator.metrics)
    scored = rescore(frame, objective)
    best = winners(scored, objective, dims)
    # a row per trial (per candidate when chunked), each with its state
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    counts = {s: int(states.get(s, 0)) for s in ("complete", "infeasible", "failed", "pruned",
                                                "running", "waiting")}  # fmt: skip
    baseline: dict[str, dict[str, float] | None] = {"validation": None, "test": None}
    test = None
    if not scored.empty:
        baseline["validation"] = evaluator.baseline()
    if test_evaluator is not None and not best.empty:
        baseline["test"] = test_evaluator.baseline()
        test = _on_test(best.head(TEST_MAX), dims, test_evaluator)
    return Concluded(frame, scored, best, baseline, test, counts)


def _on_test(best: pd.DataFrame, dims: Sequence[str], evaluator: Evaluator) -> dict[str, Any]:
    """The winners' metrics on the test split, evaluated once, after the search."""
    configs = [row_config(r, dims) for r in best.to_dict("records")]
    results = evaluator.evaluate_many(configs)
    return {
        "rows": evaluator.rows,
        "candidates": [
            {"number": int(n), "metrics": metrics}
            for n, (metrics, _) in zip(best["number"], results, strict=True)
        ],
    }


def summarize(
    c: Concluded, objective: Objective, dims: Sequence[str], names: Sequence[str]
) -> dict[str, Any]:
    """summary.json's results part (the search's settings are added by the caller)."""
    complete = c.counts["complete"] + c.counts["infeasible"]
    top = c.winners.to_dict("records")
    cols = objective_columns(objective)
    best = None
    if top:
        best = {**entry(top[0], dims, names), "objective": [float(top[0][k]) for k in cols]}
    return {
        "trials_total": len(c.frame),
        "complete": complete,
        "feasible": c.counts["complete"],
        "infeasible": c.counts["infeasible"],
        "failed": c.counts["failed"],
        "pruned": c.counts["pruned"],
        "unique_configs": len(distinct(c.scored, dims)) if not c.scored.empty else 0,
        "best": best,
        "pareto": None if objective.single else [entry(r, dims, names) for r in top],
        "pareto_size": None if objective.single else len(top),
        "float": c.baseline,
        "test": c.test,
        "objective": objective_spec(objective),
    }


def changes(metrics: Mapping[str, float], baseline: Mapping[str, float] | None) -> dict:
    """A winner's change from float: accuracy in percentage points, loss as a difference."""
    if not baseline:
        return {}
    out = {}
    if "accuracy" in metrics and "accuracy" in baseline:
        out["accuracy_points"] = 100 * (metrics["accuracy"] - baseline["accuracy"])
    if "loss" in metrics and "loss" in baseline:
        out["loss"] = metrics["loss"] - baseline["loss"]
    return {k: v for k, v in out.items() if math.isfinite(v)}
