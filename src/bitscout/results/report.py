"""Re-ranking a finished run (read by rundir.py, the one reader of a run directory) under
another objective or constraints. Drawing is in plots.py, the Markdown in report_md.py."""

import math
from collections.abc import Mapping

from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import Metric, get_metric
from bitscout.objective import MetricSpec, Objective, constraint_text
from bitscout.results.rundir import Run, load_run

__all__ = ["Run", "load_run", "parse_objective_arg", "rerank_objective"]


def parse_objective_arg(text: str, extra: Mapping[str, Metric] | None = None) -> list[MetricSpec]:
    """`accuracy=2.0,average_bitwidth=-0.1` -> scales (directions: each metric's default;
    `extra`: the run's own metrics)."""
    specs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, scale = part.partition("=")
        try:
            value = float(scale) if sep else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(
                "--objective", "must look like accuracy=2.0,average_bitwidth=-0.1", text
            )
        specs.append(
            MetricSpec(
                name.strip(), value, get_metric(name.strip(), "--objective", extra).direction
            )
        )
    if not specs:
        raise ConfigError("--objective", "needs at least one metric=scale", text)
    return specs


def rerank_objective(run: Run, objective: str | None, constraints: list[str]) -> Objective:
    """The run's objective with `--objective` scales and/or `--constraint`s replacing its own."""
    base = run.objective
    extra = run.user_metrics
    metrics = tuple(parse_objective_arg(objective, extra)) if objective else base.metrics
    cons = tuple(constraint_text(c, "--constraint", extra) for c in constraints) or base.constraints
    single = True if objective else base.single
    new = Objective(metrics, single, "maximize" if objective else base.direction, cons)
    for flag, names in (("--objective", new.names), ("--constraint", [c.metric for c in cons])):
        missing = [m for m in names if m not in run.trials]
        if missing:
            raise ConfigError(flag, "metric not recorded in trials.csv", missing[0])
    return new
