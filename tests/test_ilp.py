"""The ILP strategy: its program against brute-force enumeration of the same predictions, its
no-good cuts, n_trials and resume, and Optuna's warm start from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from digits_support import digits_mlp, trained_digits_mlp
from torch import nn

import bitscout
from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import MetricContext, compute_metrics
from bitscout.evaluate.profile import profile_model
from bitscout.quant.space import parse_space
from bitscout.study.store.base import STEP, WARM_START
from bitscout.study.strategies.ilp import BATCH, FIT_ATTR, PREDICTED, ROLE
from bitscout.study.strategies.ilp_model import (
    Bound,
    Layout,
    Linear,
    best,
    exact_model,
    groups_of,
)

LAYER = {"name": ["integer"], "data_in_width": [4, 8], "data_in_frac_width": [2],
         "weight_width": [2, 3, 4, 8], "weight_frac_width": [1, 3, 6]}  # fmt: skip
TABLE = {"setup": {"by": "name"}, "seed": {"default": {"config": LAYER}}}
OBJECTIVE = {"accuracy": 1.0, "average_bitwidth": -0.01}
LAYERS = {"0": (64, 24), "2": (24, 10)}  # Linear (in, out) features


@pytest.fixture(scope="module")
def mlp() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    return trained_digits_mlp()


def _bops_by_hand(config) -> float:
    """MACs x input width x weight width summed over the Linear layers (one sample)."""
    return float(sum(i * o * config[f"{k}/data_in_width"] * config[f"{k}/weight_width"]
                     for k, (i, o) in LAYERS.items()))  # fmt: skip


def _program():
    """The space's layout, an accuracy-like model that prefers wide tensors (with noise), and
    the real `bops` metric modelled exactly through product variables."""
    model = digits_mlp()
    space = parse_space(TABLE, model)
    layout = Layout(groups_of(space))
    profile = profile_model(model, torch.zeros(1, 64))

    def bops(config) -> float:
        return compute_metrics(["bops"], MetricContext(profile, space.resolved(config)))["bops"]

    ref = space.config(0)
    rng = np.random.default_rng(0)
    coef = np.zeros(layout.n)
    for at, opts in zip(layout.x_at, layout.options, strict=True):
        for j, option in enumerate(opts):
            wide = sum(v for v in option if isinstance(v, int))
            coef[at + j] = 0.01 * wide + rng.normal(0, 0.01)
    return space, layout, Linear(0.5, coef), exact_model(layout, ref, bops), bops


def test_bops_is_exactly_linear_in_the_product_variables():
    space, layout, _, bops_model, bops = _program()
    assert len(layout.pairs) == 2  # each layer's input group with its weight group
    for i in range(space.size):
        config = space.config(i)
        assert bops_model(layout.features(config)) == pytest.approx(bops(config), abs=1e-6)
        assert bops(config) == _bops_by_hand(config)


def test_the_solutions_are_brute_force_enumerations_best_predictions_in_order():
    space, layout, goal, bops_model, _ = _program()
    feats = [layout.features(space.config(i)) for i in range(space.size)]
    values = np.array([goal(z) for z in feats])
    cost = np.array([bops_model(z) for z in feats])
    bound = float(np.quantile(cost, 0.3))
    assert cost[np.argmax(values)] > bound  # the constraint binds
    allowed = np.flatnonzero(cost <= bound + 1e-9)
    ranked = allowed[np.argsort(-values[allowed], kind="stable")][:6]
    found = best(layout, goal, [Bound(bops_model, hi=bound)], [], 6)
    got = [space.index(layout.config(z, space.config(0))) for z in found]
    assert got == ranked.tolist()  # distinct, and in predicted order
    assert [goal(z) for z in found] == pytest.approx(values[ranked].tolist())
    # a cut on the best two gives the third first
    cuts = [layout.chosen(space.config(int(i))) for i in ranked[:2]]
    again = best(layout, goal, [Bound(bops_model, hi=bound)], cuts, 1)
    assert space.index(layout.config(again[0], space.config(0))) == ranked[2]


def test_an_impossible_bound_leaves_no_solution():
    _, layout, goal, bops_model, _ = _program()
    assert best(layout, goal, [Bound(bops_model, hi=0.0)], [], 3) == []


def _configs(result) -> list[tuple]:
    dims = sorted(c for c in result.trials if "/" in c)
    ordered = result.trials.sort_values("number")
    return [tuple(r) for r in ordered[dims].astype(str).itertuples(index=False)]


def test_ilp_stops_at_n_trials_and_resumes_without_repeating(mlp, tmp_path):
    model, data = mlp
    kw = {"objective": OBJECTIVE, "strategy": "ilp", "quiet": True}
    first = bitscout.search(model, data, TABLE, trials=20, out=tmp_path / "r", **kw)
    assert len(first.trials) == 20
    whole = bitscout.search(model, data, TABLE, trials=45, out=tmp_path / "r", **kw)
    fresh = bitscout.search(model, data, TABLE, trials=45, **kw)
    configs = _configs(whole)
    assert len(configs) == 45 and len(set(configs)) == 45  # nothing evaluated twice
    assert configs[:20] == _configs(first)
    assert configs == _configs(fresh)  # an interrupted search ends as an uninterrupted one
    trials = sorted(fresh.study.trials, key=lambda t: t.number)
    steps = [t.user_attrs[STEP] for t in trials]
    first = steps.index(1)  # lazy probes, then the first round; later probes come between
    assert steps[:first] == [0] * first and steps[first : first + BATCH] == [1] * BATCH
    roles = [t.user_attrs[ROLE] for t in trials if t.user_attrs[STEP] > 0]
    assert set(roles) <= {"solution", "local"} and roles[:BATCH] == ["solution"] * BATCH
    solved = [t for t in trials if t.user_attrs[STEP] > 0]  # solutions, local ones too
    assert all(PREDICTED in t.user_attrs for t in solved)
    fit = fresh.study.user_attrs[FIT_ATTR]
    assert fit["n"] == len(solved) and fit["r2"] <= 1.0


def test_ilp_finds_the_brute_force_optimum_of_a_small_space(mlp):
    model, data = mlp
    brute = bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="bruteforce",
                            quiet=True)  # fmt: skip
    ilp = bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="ilp", trials=60,
                          quiet=True)  # fmt: skip
    assert ilp.trials["objective"].max() == brute.trials["objective"].max()


def test_a_constraint_holds_for_the_solutions_the_model_is_exact_on(mlp):
    model, data = mlp
    result = bitscout.search(model, data, TABLE, objective={"accuracy": 1.0},
                             constraints=["bops <= 30000"], strategy="ilp", trials=40,
                             quiet=True)  # fmt: skip
    trials = sorted(result.study.trials, key=lambda t: t.number)
    solved = [t for t in trials if t.user_attrs[STEP] > 0]  # solutions and local ones alike
    assert solved and all(t.user_attrs["metrics"]["bops"] <= 30000 for t in solved)


def test_a_pareto_search_sweeps_the_second_objectives_budget(mlp):
    model, data = mlp
    result = bitscout.search(model, data, TABLE, objective=["accuracy", "bops"], strategy="ilp",
                             trials=50, quiet=True)  # fmt: skip
    trials = sorted(result.study.trials, key=lambda t: t.number)
    solved = [t for t in trials if t.user_attrs[STEP] > 0]
    assert len(_configs(result)) == len(set(_configs(result))) == 50
    assert all(len(t.user_attrs[PREDICTED]) == 2 for t in solved)
    # bops is modelled exactly: each solution's predicted bops is its measured bops
    assert [t.user_attrs[PREDICTED][1] for t in solved] == pytest.approx(
        [t.user_attrs["metrics"]["bops"] for t in solved]
    )
    assert len({t.user_attrs["metrics"]["bops"] for t in solved}) >= 4  # several budgets


def test_warm_start_queues_the_ilps_first_round_first(mlp):
    model, data = mlp
    ilp = bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="ilp", trials=40,
                          quiet=True)  # fmt: skip
    trials = sorted(ilp.study.trials, key=lambda t: t.number)
    first_round = [dict(t.params) for t in trials if t.user_attrs[STEP] == 1]
    tpe = bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="tpe", trials=24,
                          warm_start="ilp", quiet=True)  # fmt: skip
    queued = sorted(tpe.study.trials, key=lambda t: t.number)
    warm = [t for t in queued if t.user_attrs.get(WARM_START) == "ilp"]
    assert len(warm) == 10 and warm == queued[:10]  # min(WARM, 24 // 2), first
    assert [dict(t.params) for t in warm[: len(first_round)]] == first_round
    assert len({tuple(sorted(t.params.items())) for t in warm}) == 10
    assert len(tpe.trials) == 24


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"n_jobs": 2}, "n_jobs"),
        ({"fidelity": True, "train": {"epochs": 2}}, "fidelity"),
    ],
)
def test_ilp_refuses_what_it_cannot_do(mlp, kw, key):
    model, data = mlp
    with pytest.raises(ConfigError) as caught:
        bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="ilp", **kw)
    assert caught.value.key.endswith(key)  # as greedy's, the TOML key for n_jobs


def test_without_n_trials_ilp_runs_its_probes_and_100_more(mlp):
    model, data = mlp
    result = bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="ilp",
                             trials=None, quiet=True)  # fmt: skip
    assert len(result.trials) == 2 * (2 + 4 * 3) + 100  # probe_count: every joint option
    assert len(set(_configs(result))) == len(result.trials)


def test_compare_runs_ilp_as_search_does_and_ilp_tpe_from_its_solutions(mlp):
    model, data = mlp
    kw = {"objective": OBJECTIVE, "quiet": True}
    ilp = bitscout.search(model, data, TABLE, strategy="ilp", trials=40, seed=1, **kw)
    brute = bitscout.search(model, data, TABLE, strategy="bruteforce", **kw)
    result = bitscout.compare(model, data, TABLE, objective=OBJECTIVE,
                              strategies=["ilp", "ilp-tpe"], repeats=2, trials=40)  # fmt: skip
    frame = result.frame
    assert list(dict.fromkeys(frame["strategy"])) == ["ilp", "ilp-tpe"]
    assert result.optimum == brute.trials["objective"].max()
    runs = {key: rows.sort_values("trial") for key, rows in frame.groupby(["strategy", "seed"])}
    assert all(len(rows) == 40 for rows in runs.values())
    assert all(rows["config"].nunique() == 40 for (s, _), rows in runs.items() if s == "ilp")
    # the label runs the strategy: seed 1's trials are search's, in order, probes counted
    ordered = sorted(ilp.study.trials, key=lambda t: t.number)
    assert [json.loads(c) for c in runs[("ilp", 1)]["config"]] == [t.params for t in ordered]
    # ilp-tpe starts from the ILP's first round of solutions (its probes are not trials)
    first_round = [t.params for t in ordered if t.user_attrs[STEP] == 1]
    head = runs[("ilp-tpe", 0)]["config"][: len(first_round)]
    assert [json.loads(c) for c in head] == first_round


def test_the_surrogates_honesty_reaches_summary_json_and_the_report(mlp, tmp_path):
    from sklearn.metrics import r2_score

    model, data = mlp
    result = bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="ilp", trials=40,
                             out=tmp_path / "r", quiet=True)  # fmt: skip
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    fit = summary["ilp_fit"]
    assert fit == result.study.user_attrs[FIT_ATTR]
    measured = result.trials.set_index("number")["objective"]
    solved = [t for t in result.study.trials if PREDICTED in t.user_attrs]
    pred = [t.user_attrs[PREDICTED][0] for t in solved]
    meas = [measured[t.number] for t in solved]
    assert fit["n"] == len(solved) >= 2
    assert fit["r2"] == pytest.approx(r2_score(meas, pred))
    assert fit["max_miss"] == pytest.approx(
        max(abs(m - p) for m, p in zip(meas, pred, strict=True))
    )
    report = (tmp_path / "r" / "report.md").read_text()
    row = f"| ilp surrogate | predicted against measured objective over {len(solved)} solutions: "
    assert f"{row}R² = {fit['r2']:.3f}, largest miss {fit['max_miss']:.4g}" in report
    assert ("fails here" in report) == (fit["r2"] < 0.5)
    brute = bitscout.search(model, data, TABLE, objective=OBJECTIVE, strategy="random", trials=5,
                            out=tmp_path / "b", quiet=True)  # fmt: skip
    assert brute.summary["ilp_fit"] is None
    assert "ilp surrogate" not in (tmp_path / "b" / "report.md").read_text()


@pytest.mark.parametrize(("r2", "fails"), [(0.49, True), (0.5, False), (0.93, False)])
def test_a_poor_fit_says_the_additive_model_fails_in_one_line(r2, fails):
    from bitscout.results.surrogate import fit_text

    text = fit_text({"r2": r2, "max_miss": 0.0123456, "n": 12.0})
    assert text.startswith(f"predicted against measured objective over 12 solutions: R² = {r2:.3f}")
    assert "largest miss 0.01235" in text and "\n" not in text
    assert ("The additive model fails here (R² < 0.5)" in text) == fails
