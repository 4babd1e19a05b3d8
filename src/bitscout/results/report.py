"""A finished run as its directory holds it (trials.csv and summary.json), and re-ranking it
under another objective or constraints. Drawing is in plots.py, the Markdown in report_md.py."""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import get_metric
from bitscout.objective import MetricSpec, Objective, constraint_text
from bitscout.quant.space import SearchSpace, parse_space
from bitscout.results.schema import objective_from_spec, read_trials


@dataclass(frozen=True)
class Run:
    """A finished search as its directory holds it."""

    trials: pd.DataFrame  # every row of trials.csv
    summary: dict[str, Any]
    objective: Objective
    dimensions: list[str]

    def space(self) -> SearchSpace | None:
        """The search space, rebuilt from summary.json (None for a run made before it kept
        the space)."""
        if "space" not in self.summary or "layers" not in self.summary:
            return None
        return parse_space(self.summary["space"], self.summary["layers"])


def load_run(out: Path) -> Run:
    """Read `out/summary.json` and `out/trials.csv`; a missing file is a ConfigError."""
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(str(out), f"not a finished search directory ({err})") from err
    dims = summary["dimensions"]
    trials = read_trials(out / "trials.csv", dims)
    return Run(trials, summary, objective_from_spec(summary["objective"]), dims)


def parse_objective_arg(text: str) -> list[MetricSpec]:
    """`accuracy=2.0,average_bitwidth=-0.1` -> scales (directions: each metric's default)."""
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
            MetricSpec(name.strip(), value, get_metric(name.strip(), "--objective").direction)
        )
    if not specs:
        raise ConfigError("--objective", "needs at least one metric=scale", text)
    return specs


def rerank_objective(run: Run, objective: str | None, constraints: list[str]) -> Objective:
    """The run's objective with `--objective` scales and/or `--constraint`s replacing its own."""
    base = run.objective
    metrics = tuple(parse_objective_arg(objective)) if objective else base.metrics
    cons = tuple(constraint_text(c, "--constraint") for c in constraints) or base.constraints
    single = True if objective else base.single
    new = Objective(metrics, single, "maximize" if objective else base.direction, cons)
    for flag, names in (("--objective", new.names), ("--constraint", [c.metric for c in cons])):
        missing = [m for m in names if m not in run.trials]
        if missing:
            raise ConfigError(flag, "metric not recorded in trials.csv", missing[0])
    return new
