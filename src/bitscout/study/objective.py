"""Objectives: metric scales and directions, a weighted sum or a Pareto front, constraints."""

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import get_metric
from bitscout.validate import check_keys, finite_float

DIRECTIONS = ("maximize", "minimize")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}  # fmt: skip
_CONSTRAINT = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    scale: float
    direction: str


@dataclass(frozen=True)
class Constraint:
    """`metric op bound`, e.g. accuracy >= 0.9."""

    metric: str
    op: str
    bound: float

    def satisfied(self, metrics: Mapping[str, float]) -> bool:
        return OPS[self.op](metrics[self.metric], self.bound)

    def violation(self, metrics: Mapping[str, float]) -> float:
        """How far `metrics` is from satisfying this (<= 0 when satisfied), as Optuna wants."""
        if self.satisfied(metrics):
            return 0.0
        return max(abs(metrics[self.metric] - self.bound), 1e-12)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound!r}"


def parse_constraint(metric: str, text: object, key: str) -> Constraint:
    match = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            key, 'must be a comparison such as ">= 0.9" (ops: >=, <=, >, <, ==)', text
        )
    get_metric(metric, key)
    return Constraint(metric, match.group(1), float(match.group(2)))


@dataclass(frozen=True)
class Objective:
    """`single`: maximize/minimize sum(scale * metric). Otherwise one objective per metric."""

    metrics: tuple[MetricSpec, ...]
    single: bool = True
    direction: str = "maximize"
    constraints: tuple[Constraint, ...] = ()

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.metrics]

    @property
    def directions(self) -> list[str]:
        return [self.direction] if self.single else [m.direction for m in self.metrics]

    def scaled(self, metrics: Mapping[str, float]) -> dict[str, float]:
        return {m.name: m.scale * metrics[m.name] for m in self.metrics}

    def values(self, metrics: Mapping[str, float]) -> list[float]:
        """The objective value(s); in multi-objective mode the raw metric values."""
        if self.single:
            return [math.fsum(self.scaled(metrics).values())]
        return [float(metrics[m.name]) for m in self.metrics]

    def violations(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Each constraint's violation (<= 0 when satisfied), keyed by its text."""
        return {str(c): c.violation(metrics) for c in self.constraints}

    def feasible(self, metrics: Mapping[str, float]) -> bool:
        return all(c.satisfied(metrics) for c in self.constraints)

    def better(self, a: float, b: float) -> bool:
        """Whether single-objective value `a` beats `b`."""
        return a > b if self.direction == "maximize" else a < b


def _metric_spec(name: str, raw: object, key: str) -> MetricSpec:
    metric = get_metric(name, key)
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table with `scale` and `direction`", raw)
    check_keys(raw, ("scale", "direction"), key)
    scale = finite_float(raw.get("scale", 1.0))
    if scale is None:
        raise ConfigError(f"{key}.scale", "must be a finite number", raw.get("scale"))
    direction = raw.get("direction", metric.direction)
    if direction not in DIRECTIONS:
        raise ConfigError(f"{key}.direction", f"must be one of {list(DIRECTIONS)}", direction)
    return MetricSpec(name, scale, direction)


def parse_objective(
    metrics: Mapping[str, Any],
    constraints: Mapping[str, Any],
    *,
    single: bool,
    direction: str,
    key: str = "search.strategy",
) -> Objective:
    """Build the objective from `[search.strategy.metrics]` and `.constraints`."""
    if not isinstance(metrics, Mapping) or not metrics:
        raise ConfigError(f"{key}.metrics", "needs at least one metric, e.g. accuracy.scale = 1.0")
    if direction not in DIRECTIONS:
        raise ConfigError(f"{key}.setup.direction", f"must be one of {list(DIRECTIONS)}", direction)
    specs = tuple(_metric_spec(n, v, f"{key}.metrics.{n}") for n, v in metrics.items())
    if not isinstance(constraints, Mapping):
        raise ConfigError(f"{key}.constraints", "must be a table", constraints)
    cons = tuple(parse_constraint(n, v, f"{key}.constraints.{n}") for n, v in constraints.items())
    return Objective(specs, single, direction, cons)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether point `a` Pareto-dominates `b` under `directions`."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]
    at_least = all(s * x >= s * y for s, x, y in zip(sign, a, b, strict=True))
    return at_least and any(s * x > s * y for s, x, y in zip(sign, a, b, strict=True))


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indexes of the non-dominated points (duplicates of a front point are all kept)."""
    if len(points) == 0:
        return []
    sign = np.array([1.0 if d == "maximize" else -1.0 for d in directions])
    arr = np.asarray(points, dtype=float) * sign  # now every objective is maximized
    front = []
    for i, p in enumerate(arr):
        dominated = np.all(arr >= p, axis=1) & np.any(arr > p, axis=1)
        if not dominated.any():
            front.append(i)
    return front
