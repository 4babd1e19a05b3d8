"""End-to-end tests of `bitscout search` with Optuna samplers and constraints on the
48-candidate seed space: TPE reproducible by seed, repeated proposals served from the cache,
the multi-objective pareto.csv against a reference front, and constraints marking rows
infeasible.

Everything runs offline on the `fake` dataset shaped like the jet data (tests/search_support.py);
one float checkpoint is trained per module.
"""

from __future__ import annotations

import csv
import tomllib

import pytest
from search_support import (  # noqa: F401 - the fixtures
    DIMS,
    base_doc,
    ckpt,
    config_of,
    data,
    float_model,
    read_summary,
    read_trials,
    reference,
    search,
    workdir,
)

# --- Optuna -------------------------------------------------------------------------------


def test_tpe_is_reproducible_by_seed(ckpt, workdir):  # noqa: F811
    doc = base_doc()

    def sequence(seed: str, out: str) -> list[tuple[int, ...]]:
        path = search(
            ckpt, workdir, doc, "--sampler", "tpe", "--seed", seed, "--trials", "15", out=out
        )
        summary = read_summary(path)
        assert (summary["strategy"], summary["sampler"]) == ("optuna", "tpe")
        assert summary["seed"] == int(seed)
        assert summary["trials_run"] == 15
        rows = read_trials(path)
        assert len(rows) == 15
        return [config_of(r) for r in rows]

    first = sequence("3", "tpe3a")
    assert sequence("3", "tpe3b") == first
    assert sequence("4", "tpe4") != first


def test_repeated_proposals_are_cached(ckpt, workdir, reference):  # noqa: F811
    out = search(
        ckpt, workdir, base_doc(), "--sampler", "tpe", "--trials", "60", "--seed", "0", out="cached"
    )
    rows = read_trials(out)
    assert len(rows) == 60
    summary = read_summary(out)
    configs = [config_of(r) for r in rows]
    assert summary["unique_configs"] <= 48
    assert summary["unique_configs"] == len(set(configs))
    assert summary["trials_run"] == 60
    metric_columns = [
        "accuracy",
        "loss",
        "average_bitwidth",
        "model_size_bits",
        "bops",
        "objective",
    ]
    first: dict[tuple[int, ...], dict[str, str]] = {}
    cached = 0
    for row, config in zip(rows, configs, strict=True):
        if config not in first:
            assert row["cached"] == "False"
            first[config] = row
            assert float(row["accuracy"]) == pytest.approx(reference[config]["accuracy"])
            continue
        assert row["cached"] == "True"
        cached += 1
        for col in metric_columns:
            assert row[col] == first[config][col]
    assert cached == 60 - len(first) >= 12  # 60 proposals, at most 48 distinct candidates


def ref_non_dominated(points: dict[int, tuple[float, float]]) -> set[int]:
    """Trial numbers not dominated under (accuracy maximized, average_bitwidth minimized)."""

    def dom(a, b) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    return {i for i, p in points.items() if not any(dom(q, p) for q in points.values())}


@pytest.mark.parametrize("sampler", ["random", "nsgaii"])
def test_multi_objective_pareto_csv(ckpt, workdir, sampler):  # noqa: F811
    doc = base_doc()
    strategy = doc["search"]["strategy"]
    strategy["setup"]["sum_scaled_metrics"] = False
    strategy["metrics"] = {
        "accuracy": {"direction": "maximize"},
        "average_bitwidth": {"direction": "minimize"},
    }
    out = search(
        ckpt,
        workdir,
        doc,
        "--sampler",
        sampler,
        "--trials",
        "30",
        "--seed",
        "1",
        out=f"pareto_{sampler}",
    )
    rows = read_trials(out)
    assert len(rows) == 30
    complete = [r for r in rows if r["state"] == "complete"]
    assert len(complete) == 30
    for r in complete:  # the objectives are the raw metrics
        assert r["objective_accuracy"] == r["accuracy"]
        assert r["objective_average_bitwidth"] == r["average_bitwidth"]
    points = {
        int(r["number"]): (float(r["accuracy"]), float(r["average_bitwidth"])) for r in complete
    }
    expected = ref_non_dominated(points)
    by_number = {int(r["number"]): r for r in complete}

    with (out / "pareto.csv").open(newline="") as f:
        front = list(csv.DictReader(f))
    assert front
    # one row per distinct config on the front: its first trial, and how many proposed it
    assert {config_of(r) for r in front} == {config_of(by_number[i]) for i in expected}
    assert len({config_of(r) for r in front}) == len(front)
    order = [int(r["number"]) for r in complete]  # trials.csv is in the order they finished
    for r in front:
        same = [n for n in order if config_of(by_number[n]) == config_of(r)]
        assert int(r["number"]) == same[0] and int(r["proposals"]) == len(same)
        trial = by_number[int(r["number"])]
        assert float(r["accuracy"]) == float(trial["accuracy"])
        assert float(r["average_bitwidth"]) == float(trial["average_bitwidth"])
    summary = read_summary(out)
    assert summary["pareto_size"] == len(front)
    assert summary["sampler"] == sampler


# --- constraints --------------------------------------------------------------------------


def _check_constrained(rows, summary, feasible) -> None:
    assert rows
    infeasible = [r for r in rows if r["state"] == "infeasible"]
    for r in rows:
        assert r["state"] == ("complete" if feasible(r) else "infeasible")
    assert summary["infeasible"] == len(infeasible)
    best = summary["best"]
    assert best is not None
    best_row = rows[best["number"]]
    assert best_row["state"] == "complete"
    assert feasible(best_row)
    top = max(float(r["objective"]) for r in rows if r["state"] == "complete")
    assert best["objective"][0] == top


def test_constraint_on_bitwidth_excludes_the_unconstrained_best(ckpt, workdir, reference):  # noqa: F811
    # The unconstrained best has weight width 2 (see the reference); forbid it.
    unconstrained = max(reference, key=lambda c: reference[c]["score"])
    assert unconstrained[1] == 2
    doc = base_doc()
    doc["search"]["strategy"]["name"] = "bruteforce"
    doc["search"]["strategy"]["constraints"] = {"average_bitwidth": ">= 4"}
    out = search(ckpt, workdir, doc, out="constrained_bits")
    rows = read_trials(out)
    assert len(rows) == 48
    summary = read_summary(out)
    _check_constrained(rows, summary, lambda r: int(r["seq_blocks_2/weight_width"]) >= 4)
    assert summary["infeasible"] == 12
    feasible_ref = {c: v for c, v in reference.items() if c[1] >= 4}
    top = max(v["score"] for v in feasible_ref.values())
    best_config = tuple(summary["best"]["config"][d] for d in DIMS)
    assert feasible_ref[best_config]["score"] == pytest.approx(top, abs=1e-9)
    best_toml = tomllib.loads((out / "best.toml").read_text())
    assert best_toml["passes"]["quantize"]["seq_blocks_2"]["config"]["weight_width"] >= 4


@pytest.mark.parametrize(
    "args", [("--strategy", "bruteforce"), ("--sampler", "tpe", "--trials", "20")]
)
def test_accuracy_constraint_marks_infeasible_rows(ckpt, workdir, reference, args):  # noqa: F811
    accs = sorted(v["accuracy"] for v in reference.values())
    bound = accs[len(accs) // 2]  # the median: about half the candidates are infeasible
    assert accs[0] < bound <= accs[-1]
    doc = base_doc()
    doc["search"]["strategy"]["constraints"] = {"accuracy": f">= {bound!r}"}
    out = search(ckpt, workdir, doc, *args, out=f"constrained_acc_{args[1]}")
    rows = read_trials(out)
    _check_constrained(rows, read_summary(out), lambda r: float(r["accuracy"]) >= bound)
    if args[1] == "bruteforce":
        assert sum(r["state"] == "infeasible" for r in rows) == sum(a < bound for a in accs)
