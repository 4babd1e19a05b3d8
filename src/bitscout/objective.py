"""Objectives: metric scales and directions, a weighted sum or a Pareto front, constraints."""

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitscout._core.validate import check_keys, finite_float
from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import Metric, get_metric

DIRECTIONS = ("maximize", "minimize")
NO_METRIC = "needs at least one metric"  # both doors' words
SCALE_RULE = "must be a finite number"


def sign(direction: str) -> float:
    """+1 for "maximize", -1 for "minimize": `sign * value` is larger when better. The one place
    that reads a direction's meaning."""
    return 1.0 if direction == DIRECTIONS[0] else -1.0


OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}  # fmt: skip
NEGATION = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "==": "!="}
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

    def broken(self, metrics: Mapping[str, float]) -> str | None:
        """`accuracy 0.931 < 0.95` when `metrics` break this constraint, else None."""
        value = metrics[self.metric]
        if self.satisfied(metrics):
            return None
        return f"{self.metric} {value:.6g} {NEGATION[self.op]} {self.bound:g}"


def parse_constraint(
    metric: str, text: object, key: str, extra: Mapping[str, Metric] | None = None
) -> Constraint:
    match = _CONSTRAINT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(
            key, 'must be a comparison such as ">= 0.9" (ops: >=, <=, >, <, ==)', text
        )
    get_metric(metric, key, extra)
    return Constraint(metric, match.group(1), float(match.group(2)))


def constraint_text(
    text: object, key: str, extra: Mapping[str, Metric] | None = None
) -> Constraint:
    """A whole constraint, `accuracy >= 0.9`."""
    match = re.match(r"^\s*([A-Za-z_]\w*)\s*(.*)$", text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(key, 'must look like "accuracy >= 0.9"', text)
    return parse_constraint(match.group(1), match.group(2), key, extra)


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

    def reason(self, metrics: Mapping[str, float]) -> str:
        """Every constraint `metrics` break, and by how much; empty when feasible."""
        return "; ".join(filter(None, (c.broken(metrics) for c in self.constraints)))

    def better(self, a: float, b: float) -> bool:
        """Whether single-objective value `a` beats `b`."""
        return sign(self.direction) * a > sign(self.direction) * b


def _metric_spec(name: str, raw: object, key: str) -> MetricSpec:
    metric = get_metric(name, key)  # registered metrics: a config cannot define its own
    if not isinstance(raw, Mapping):
        raise ConfigError(key, "must be a table with `scale` and `direction`", raw)
    check_keys(raw, ("scale", "direction"), key)
    scale = finite_float(raw.get("scale", 1.0))
    if scale is None:
        raise ConfigError(f"{key}.scale", SCALE_RULE, raw.get("scale"))
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
        raise ConfigError(f"{key}.metrics", NO_METRIC)
    if direction not in DIRECTIONS:
        raise ConfigError(f"{key}.setup.direction", f"must be one of {list(DIRECTIONS)}", direction)
    specs = tuple(_metric_spec(n, v, f"{key}.metrics.{n}") for n, v in metrics.items())
    if not isinstance(constraints, Mapping):
        raise ConfigError(f"{key}.constraints", "must be a table", constraints)
    cons = tuple(parse_constraint(n, v, f"{key}.constraints.{n}") for n, v in constraints.items())
    return Objective(specs, single, direction, cons)


def objective_from(
    spec: Mapping[str, Any] | Sequence[str],
    constraints: Sequence[str] = (),
    extra: Mapping[str, Metric] | None = None,
) -> Objective:
    """The Python API's objective: `{"accuracy": 2.0, "average_bitwidth": -0.1}` is one
    maximized weighted sum (MASE's `sum_scaled_metrics`); `["accuracy", "bops"]` a Pareto
    search with each metric's own direction, `{"accuracy": "maximize", "bops": "minimize"}`
    one with the directions given."""
    names = list(spec)
    if not names:
        raise ConfigError("objective", NO_METRIC)
    metrics = {n: get_metric(n, f"objective.{n}", extra) for n in names}
    values = list(spec.values()) if isinstance(spec, Mapping) else []
    if values and all(isinstance(v, str) for v in values):
        for name, direction in zip(names, values, strict=True):
            if direction not in DIRECTIONS:
                raise ConfigError(f"objective.{name}", f"must be one of {list(DIRECTIONS)}",
                                  direction)  # fmt: skip
        specs = tuple(MetricSpec(n, 1.0, d) for n, d in zip(names, values, strict=True))
        single = False
    elif values:
        scales = [s for s in map(finite_float, values) if s is not None]
        if any(isinstance(v, str) for v in values):
            rule = "scales must be finite numbers (or all directions, for a Pareto search)"
            raise ConfigError("objective", rule, dict(zip(names, values, strict=True)))
        for name, value in zip(names, values, strict=True):
            if finite_float(value) is None:  # the TOML door's `<metric>.scale` rule
                raise ConfigError(f"objective.{name}", SCALE_RULE, value)
        specs = tuple(
            MetricSpec(n, s, metrics[n].direction) for n, s in zip(names, scales, strict=True)
        )
        single = True
    else:
        specs = tuple(MetricSpec(n, 1.0, metrics[n].direction) for n in names)
        single = False
    cons = tuple(constraint_text(c, "constraints", extra) for c in constraints)
    return Objective(specs, single, "maximize", cons)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether point `a` Pareto-dominates `b` under `directions`."""
    signs = [sign(d) for d in directions]
    at_least = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True))
    return at_least and any(s * x > s * y for s, x, y in zip(signs, a, b, strict=True))


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indexes of the non-dominated points, ascending (duplicates of a front point are all
    kept). Two objectives in one sort; more by a sweep in order of decreasing sum, since only
    a point of larger sum can dominate: a million points take seconds, not hours."""
    if len(points) == 0:
        return []
    signs = np.array([sign(d) for d in directions])
    arr = np.asarray(points, dtype=float).reshape(len(points), -1) * signs  # all maximized
    if arr.shape[1] == 2:
        return _front_2d(arr)
    front: list[int] = []
    for i in np.argsort(-arr.sum(axis=1), kind="stable"):
        kept = arr[front]
        if not (np.all(kept >= arr[i], axis=1) & np.any(kept > arr[i], axis=1)).any():
            front.append(int(i))
    return sorted(front)


def _front_2d(arr: np.ndarray) -> list[int]:
    """A point is dominated by a point of larger x with y at least its own, or by one of
    equal x and larger y."""
    xs, group = np.unique(arr[:, 0], return_inverse=True)  # ascending x
    top = np.full(len(xs), -np.inf)
    np.maximum.at(top, group, arr[:, 1])
    # the largest y among points of strictly larger x, per x group
    above = np.append(np.maximum.accumulate(top[::-1])[::-1][1:], -np.inf)
    y = arr[:, 1]
    dominated = (above[group] >= y) | (top[group] > y)
    return np.flatnonzero(~dominated).tolist()
