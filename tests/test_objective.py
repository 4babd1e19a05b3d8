"""Tests for bitscout.objective: weighted sums, constraints and the Pareto front."""

from __future__ import annotations

import random

import pytest

from bitscout.errors import ConfigError
from bitscout.objective import (
    Constraint,
    dominates,
    pareto_front,
    parse_constraint,
    parse_objective,
)

KEY = "search.strategy"


def lab3(**kw):
    metrics = {
        "accuracy": {"scale": 2.0, "direction": "maximize"},
        "average_bitwidth": {"scale": -0.1, "direction": "minimize"},
    }
    return parse_objective(
        metrics,
        kw.pop("constraints", {}),
        single=kw.pop("single", True),
        direction=kw.pop("direction", "maximize"),
    )


# --- weighted sum -------------------------------------------------------------------------


@pytest.mark.parametrize(("acc", "bits"), [(0.75, 4.0), (0.5, 2.0), (0.0, 32.0), (1.0, 8.0)])
def test_weighted_sum_is_hand_computed(acc, bits):
    objective = lab3()
    metrics = {"accuracy": acc, "average_bitwidth": bits, "loss": 9.0}
    assert objective.single
    assert objective.names == ["accuracy", "average_bitwidth"]
    assert objective.directions == ["maximize"]
    assert objective.scaled(metrics) == pytest.approx(
        {"accuracy": 2 * acc, "average_bitwidth": -0.1 * bits}
    )
    assert objective.values(metrics) == pytest.approx([2 * acc - 0.1 * bits], abs=1e-12)


def test_hand_values():
    objective = lab3()
    assert objective.values({"accuracy": 0.75, "average_bitwidth": 4.0}) == pytest.approx([1.1])
    assert objective.values({"accuracy": 0.25, "average_bitwidth": 16.0}) == pytest.approx([-1.1])


def test_scale_defaults_to_one_and_direction_to_the_metric():
    objective = parse_objective(
        {"accuracy": {}, "average_bitwidth": {}}, {}, single=False, direction="maximize"
    )
    assert [m.scale for m in objective.metrics] == [1.0, 1.0]
    assert objective.directions == ["maximize", "minimize"]
    # Multi-objective values are the raw metrics, unscaled.
    assert objective.values({"accuracy": 0.5, "average_bitwidth": 6.0}) == [0.5, 6.0]


def test_better_follows_direction():
    assert lab3().better(1.0, 0.5)
    assert not lab3().better(0.5, 1.0)
    assert lab3(direction="minimize").better(0.5, 1.0)
    assert not lab3(direction="minimize").better(1.0, 1.0)


# --- constraints --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "op", "bound"),
    [
        (">= 0.9", ">=", 0.9),
        ("<=2000", "<=", 2000.0),
        ("< 1e3", "<", 1000.0),
        ("  > -0.5 ", ">", -0.5),
        ("== 4", "==", 4.0),
        ("<= .5", "<=", 0.5),
        (">= 2.5E-1", ">=", 0.25),
    ],
)
def test_constraint_parsing(text, op, bound):
    c = parse_constraint("accuracy", text, f"{KEY}.constraints.accuracy")
    assert c == Constraint("accuracy", op, bound)


def test_constraint_satisfied_and_violation():
    c = parse_constraint("accuracy", ">= 0.9", "k")
    assert c.satisfied({"accuracy": 0.9})
    assert c.satisfied({"accuracy": 0.95})
    assert not c.satisfied({"accuracy": 0.85})
    assert c.violation({"accuracy": 0.95}) == 0.0
    assert c.violation({"accuracy": 0.85}) == pytest.approx(0.05)
    lt = parse_constraint("model_size_bits", "< 1e3", "k")
    assert lt.satisfied({"model_size_bits": 999.0})
    assert not lt.satisfied({"model_size_bits": 1000.0})
    assert lt.violation({"model_size_bits": 1000.0}) > 0
    objective = lab3(constraints={"accuracy": ">= 0.9", "average_bitwidth": "<= 8"})
    assert objective.feasible({"accuracy": 0.9, "average_bitwidth": 8.0})
    assert not objective.feasible({"accuracy": 0.9, "average_bitwidth": 16.0})
    assert not objective.feasible({"accuracy": 0.8, "average_bitwidth": 2.0})


@pytest.mark.parametrize(
    "text",
    [
        "at least 0.9",
        ">= abc",
        0.9,
        ">=",
        "=> 0.9",
        ">= 0.9 1",
        "",
        None,
        [">=", 0.9],
        "!= 0.9",
        ">= 0.9.1",
    ],
)
def test_bad_constraints_name_the_key(text):
    with pytest.raises(ConfigError) as info:
        lab3(constraints={"accuracy": text})
    assert info.value.key == f"{KEY}.constraints.accuracy"
    assert str(info.value).startswith(f"{KEY}.constraints.accuracy: ")
    assert ">=" in str(info.value)


def test_constraint_on_unknown_metric():
    with pytest.raises(ConfigError) as info:
        lab3(constraints={"acc": ">= 0.9"})
    assert info.value.key == f"{KEY}.constraints.acc"
    assert "accuracy" in str(info.value)


def test_constraints_must_be_a_table():
    with pytest.raises(ConfigError, match=rf"^{KEY}\.constraints: "):
        parse_objective({"accuracy": {}}, [">= 0.9"], single=True, direction="maximize")


# --- metric errors ------------------------------------------------------------------------


def test_unknown_metric_lists_known():
    with pytest.raises(ConfigError) as info:
        parse_objective({"acuracy": {"scale": 1.0}}, {}, single=True, direction="maximize")
    message = str(info.value)
    assert info.value.key == f"{KEY}.metrics.acuracy"
    assert message.startswith(f"{KEY}.metrics.acuracy: ")
    for known in ("accuracy", "average_bitwidth", "bops", "flops", "loss", "model_size"):
        assert known in message


@pytest.mark.parametrize(
    ("metrics", "direction", "key"),
    [
        ({}, "maximize", f"{KEY}.metrics"),
        ({"accuracy": {"scale": "2"}}, "maximize", f"{KEY}.metrics.accuracy.scale"),
        ({"accuracy": {"scale": True}}, "maximize", f"{KEY}.metrics.accuracy.scale"),
        ({"accuracy": {"scale": float("nan")}}, "maximize", f"{KEY}.metrics.accuracy.scale"),
        ({"accuracy": {"direction": "up"}}, "maximize", f"{KEY}.metrics.accuracy.direction"),
        ({"accuracy": {"weight": 1.0}}, "maximize", f"{KEY}.metrics.accuracy.weight"),
        ({"accuracy": 2.0}, "maximize", f"{KEY}.metrics.accuracy"),
        ({"accuracy": {}}, "max", f"{KEY}.setup.direction"),
    ],
)
def test_bad_metrics_name_the_key(metrics, direction, key):
    with pytest.raises(ConfigError) as info:
        parse_objective(metrics, {}, single=True, direction=direction)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


# --- Pareto front -------------------------------------------------------------------------


def ref_dominates(a, b, directions) -> bool:
    better_or_equal = True
    strictly = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == "minimize":
            x, y = -x, -y
        if x < y:
            better_or_equal = False
        if x > y:
            strictly = True
    return better_or_equal and strictly


def ref_front(points, directions) -> list[int]:
    return [
        i
        for i, p in enumerate(points)
        if not any(ref_dominates(q, p, directions) for j, q in enumerate(points) if j != i)
    ]


@pytest.mark.parametrize("seed", range(8))
def test_pareto_front_matches_quadratic_filter(seed):
    rng = random.Random(seed)
    dims = rng.choice([2, 3])
    directions = [rng.choice(["maximize", "minimize"]) for _ in range(dims)]
    n = rng.randint(1, 60)
    # A coarse grid makes ties and exact duplicates common.
    points = [[float(rng.randint(0, 5)) for _ in range(dims)] for _ in range(n)]
    points += [list(points[rng.randrange(n)]) for _ in range(rng.randint(1, 10))]
    rng.shuffle(points)
    assert pareto_front(points, directions) == ref_front(points, directions)
    for a in points[:15]:
        for b in points[:15]:
            assert dominates(a, b, directions) == ref_dominates(a, b, directions)


def test_pareto_front_mixed_directions_by_hand():
    points = [(0.9, 8.0), (0.9, 4.0), (0.8, 2.0), (0.7, 2.0), (0.9, 4.0), (0.95, 16.0)]
    assert pareto_front(points, ["maximize", "minimize"]) == [1, 2, 4, 5]
    assert pareto_front(points, ["maximize", "maximize"]) == [5]
    assert pareto_front(points[:5], ["maximize", "maximize"]) == [0]
    assert pareto_front(points, ["minimize", "minimize"]) == [3]


def test_pareto_front_edge_cases():
    assert pareto_front([], ["maximize"]) == []
    assert pareto_front([(1.0, 1.0)], ["maximize", "minimize"]) == [0]
    assert pareto_front([(1.0, 1.0)] * 3, ["maximize", "minimize"]) == [0, 1, 2]
    assert not dominates((1.0, 1.0), (1.0, 1.0), ["maximize", "minimize"])
    assert dominates((2.0, 1.0), (1.0, 1.0), ["maximize", "minimize"])
    assert dominates((1.0, 0.0), (1.0, 1.0), ["maximize", "minimize"])


def test_storage_password_is_masked():
    from bitscout.study.store.storage import mask_password

    assert mask_password("postgresql://bob:s3cr@t@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert mask_password("sqlite:///runs/a/study.db") == "sqlite:///runs/a/study.db"
