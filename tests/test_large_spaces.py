"""Strategies for large spaces: the shuffled order, greedy, and Optuna warm-started by greedy."""

from __future__ import annotations

import csv
import itertools
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from digits_support import trained_digits_mlp
from optuna.trial import TrialState
from reliability_support import assets, complete, config_doc, load, params_key, run, worker  # noqa: F401
from torch import nn

import bitscout
from bitscout.errors import ConfigError
from bitscout.quant.space import parse_space
from bitscout.study.permutation import Permutation
from bitscout.study.strategies.greedy import PATH_ATTR
from bitscout.zoo.models import build_model

WIDTHS = {"data_in_width": [4, 8], "weight_width": [2, 3, 4, 8]}
LAYER = {"name": ["integer"], **WIDTHS, "data_in_frac_width": [2], "weight_frac_width": [3]}
OBJECTIVE = {"accuracy": 1.0, "average_bitwidth": -0.01}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 48, 1000, 4097])
def test_the_permutation_is_a_bijection_fixed_by_its_seed(n):
    order = [Permutation(n, 5)(i) for i in range(n)]
    assert sorted(order) == list(range(n))
    assert order == [Permutation(n, 5)(i) for i in range(n)]
    if n >= 48:
        assert order != [Permutation(n, 6)(i) for i in range(n)]
        assert order != list(range(n))


def test_a_huge_permutation_needs_no_memory_and_stays_in_range():
    n = 48**5
    p = Permutation(n, 0)
    first = [p(i) for i in range(10_000)]
    assert len(set(first)) == 10_000 and all(0 <= v < n for v in first)
    assert np.mean(first) == pytest.approx(n / 2, rel=0.05)  # spread over the whole space


# --- shuffled brute force through the CLI ---------------------------------------------------


def _shuffled(assets: dict, tmp_path, n_trials: int = 48) -> dict:  # noqa: F811
    doc = config_doc("bruteforce", n_trials)
    doc["search"]["strategy"]["setup"]["order"] = "shuffled"
    path = tmp_path / "shuffled.toml"
    path.write_text(tomli_w.dumps(doc))
    return {**assets, "shuffled": path}


def _space():
    return parse_space(config_doc()["search"]["search_space"], build_model("jsc-tiny"))


def _in_order(study) -> list[int]:
    space = _space()
    done = sorted(complete(study), key=lambda t: t.datetime_complete)
    return [space.index(t.params) for t in done]


def test_shuffled_brute_force_walks_the_seeded_permutation(assets, tmp_path):  # noqa: F811
    paths = _shuffled(assets, tmp_path, n_trials=20)
    rc, err = run(paths, tmp_path / "run", config="shuffled")
    assert rc == 0, err
    found = _in_order(load(tmp_path / "run" / "study.journal"))
    p = Permutation(48, 0)  # setup.seed = 0
    # chunks of 8 positions, each chunk's token (its last position) recorded last
    assert sorted(found) == sorted(p(i) for i in range(20))
    assert found[:7] == [p(i) for i in range(7)]


def test_shuffled_brute_force_resumes_after_sigkill_with_nothing_repeated(
    assets,  # noqa: F811
    tmp_path,
):
    paths = _shuffled(assets, tmp_path)
    out = tmp_path / "run"
    rc, err = run(paths, out, env={"DRIVER_KILL_AFTER": "13"}, config="shuffled")
    assert rc == -signal.SIGKILL, err
    # killed mid-chunk, after the write of its batch of 7 that holds the 13th trial
    assert len(complete(load(out / "study.journal"))) == 15
    rc, err = run(paths, out, config="shuffled")
    assert rc == 0, err
    study = load(out / "study.journal")
    assert len(complete(study)) == 48 == len({params_key(t) for t in complete(study)})
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def test_shuffled_brute_force_is_shared_by_workers(assets, tmp_path):  # noqa: F811
    paths = _shuffled(assets, tmp_path)
    storage = str(tmp_path / "shared.journal")
    _three(paths, tmp_path, "shuffled", "--storage", storage, "--seed", "0")
    done = complete(load(storage))
    assert len(done) == 48 == len({params_key(t) for t in done})
    assert len({t.user_attrs["worker"] for t in done}) >= 2


def _three(paths: dict, tmp, config: str, *args: str) -> None:
    """Three slowed-down workers on one study, each into its own output directory."""
    procs = [worker(paths, tmp / f"w{i}", *args, env={"DRIVER_SLOW_S": "0.03"}, config=config)
             for i in range(3)]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err


def test_a_worker_with_another_shuffle_is_refused(assets, tmp_path):  # noqa: F811
    paths = _shuffled(assets, tmp_path, n_trials=8)
    storage = str(tmp_path / "shared.journal")
    rc, err = run(paths, tmp_path / "a", "--storage", storage, "--seed", "0", config="shuffled")
    assert rc == 0, err
    rc, err = run(paths, tmp_path / "b", "--storage", storage, "--seed", "1", config="shuffled")
    assert rc == 2 and "order" in err and err.count("\n") == 1, err


# --- greedy and warm start through the Python API --------------------------------------------


@pytest.fixture(scope="module")
def mlp() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    return trained_digits_mlp()


def _space_table() -> dict:
    return {"setup": {"by": "name"}, "seed": {"default": {"config": LAYER}}}


def _widths(row) -> list[int]:
    return [int(row[f"{layer}/{f}"]) for layer in ("0", "2") for f in WIDTHS]


def test_greedy_steps_down_one_choice_at_a_time_taking_the_best_move(mlp):
    model, data = mlp
    result = bitscout.search(model, data, _space_table(), objective=OBJECTIVE,
                             strategy="greedy", quiet=True)  # fmt: skip
    trials = result.trials.set_index("number")
    path = result.study.user_attrs[PATH_ATTR]
    order = {f: sorted(c, reverse=True) for f, c in WIDTHS.items()}
    fields = [f for _ in ("0", "2") for f in WIDTHS]
    assert _widths(trials.loc[path[0]]) == [8, 8, 8, 8]  # the most precise start
    for before, after in itertools.pairwise(path):
        old, new = _widths(trials.loc[before]), _widths(trials.loc[after])
        moved = [i for i in range(4) if old[i] != new[i]]
        assert len(moved) == 1  # one dimension, one choice down
        i = moved[0]
        assert order[fields[i]].index(new[i]) == order[fields[i]].index(old[i]) + 1
        # every single move from `old` was evaluated, and the chosen one scores best
        moves = []
        for j in range(4):
            at = order[fields[j]].index(old[j])
            if at + 1 < len(order[fields[j]]):
                moves.append([*old[:j], order[fields[j]][at + 1], *old[j + 1 :]])
        scored = {tuple(_widths(r)): r["objective"] for _, r in trials.iterrows()}
        assert all(tuple(m) in scored for m in moves)
        assert scored[tuple(new)] == max(scored[tuple(m)] for m in moves)
    assert _widths(trials.loc[path[-1]]) == [4, 2, 4, 2]  # walked to the lowest choices
    steps = sum(len(c) - 1 for c in WIDTHS.values()) * 2
    assert len(path) == steps + 1
    assert len(trials) <= 1 + steps * 4  # about (sum of choices) x steps, far below 64


def test_greedy_stops_at_n_trials_and_resumes_without_repeating(mlp, tmp_path):
    model, data = mlp
    kw = {"objective": OBJECTIVE, "strategy": "greedy", "quiet": True, "out": tmp_path / "g"}
    first = bitscout.search(model, data, _space_table(), trials=7, **kw)
    assert len(first.trials) == 7
    whole = bitscout.search(model, data, _space_table(), trials=40, **kw)
    configs = whole.trials[[c for c in whole.trials if "/" in c]].astype(str)
    assert len(configs.drop_duplicates()) == len(configs)  # nothing evaluated twice
    fresh = bitscout.search(model, data, _space_table(), trials=40, **{**kw, "out": None})
    assert whole.study.user_attrs[PATH_ATTR] == fresh.study.user_attrs[PATH_ATTR]


def test_warm_start_queues_the_greedy_path_first(mlp):
    model, data = mlp
    walk = bitscout.search(model, data, _space_table(), objective=OBJECTIVE,
                           strategy="greedy", quiet=True)  # fmt: skip
    path = walk.trials.set_index("number").loc[walk.study.user_attrs[PATH_ATTR]]
    dims = [c for c in walk.trials if "/" in c]
    expected = [tuple(r) for r in path[dims].astype(str).itertuples(index=False)]
    tpe = bitscout.search(model, data, _space_table(), objective=OBJECTIVE, strategy="tpe",
                          trials=30, warm_start="greedy", quiet=True)  # fmt: skip
    first = tpe.trials.sort_values("number").head(len(expected))[dims].astype(str)
    assert [tuple(r) for r in first.itertuples(index=False)] == expected  # 9 <= 30 // 2
    assert len(tpe.trials) == 30


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        ({"strategy": "tpe", "order": "shuffled"}, "order"),
        ({"strategy": "bruteforce", "warm_start": "greedy"}, "warm_start"),
        ({"strategy": "tpe", "warm_start": "greedyy"}, "warm_start"),
        ({"strategy": "greedy", "n_jobs": 2}, "n_jobs"),
    ],
)
def test_bad_starts_are_refused(mlp, kw, name):
    model, data = mlp
    with pytest.raises(ConfigError, match=name):
        bitscout.search(model, data, _space_table(), quiet=True, **kw)


def test_greedy_refuses_a_space_of_several_formats(mlp):
    model, data = mlp
    table = _space_table()
    table["seed"]["default"]["config"] = {**LAYER, "name": ["integer", "log"]}
    with pytest.raises(ConfigError, match="greedy"):
        bitscout.search(model, data, table, strategy="greedy", quiet=True)


def test_compare_accepts_the_new_strategies(tmp_path, capsys):
    from bitscout.cli import main

    doc = config_doc()
    cfg = tmp_path / "c.toml"
    cfg.write_text(tomli_w.dumps(doc))
    labels = "bruteforce,bruteforce-reversed,shuffled,greedy,greedy-tpe"
    argv = ["compare", str(cfg), "--strategies", labels, "--repeats", "2", "--trials", "12"]
    assert main([*argv, "--out", str(tmp_path / "cmp")]) == 0
    with (tmp_path / "cmp" / "compare.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(dict.fromkeys(r["strategy"] for r in rows)) == labels.split(",")
    first = {r["strategy"]: r["config"] for r in rows if r["seed"] == "0" and r["trial"] == "1"}
    # reversed index order starts where index order ends: every choice listed the other way
    assert json.loads(first["bruteforce"]) != json.loads(first["bruteforce-reversed"])
    assert json.loads(first["bruteforce-reversed"])["seq_blocks_2/bias_width"] == 16


def test_compare_reports_the_median_best_at_equal_budgets():
    from bitscout.analysis.compare import summarize
    from bitscout.results.compare_out import markdown

    rows = []
    for seed, scale in ((0, 1.0), (1, 2.0), (2, 4.0)):
        for trial in range(1, 121):
            best = scale * min(trial, 60)  # improves until trial 60
            rows.append({"strategy": "s", "seed": seed, "trial": trial, "best_so_far": best})
    short = [{**r, "strategy": "t"} for r in rows if r["trial"] <= 30]  # stops early
    (s, t) = summarize(rows + short, ["s", "t"], [0, 1, 2], None)
    assert s["best_at"] == {50: 100.0, 100: 120.0}  # medians of 50/100/200 and 60/120/240
    assert t["best_at"] == {50: 60.0, 100: 60.0}  # a short run keeps its last best
    text = markdown([s, t], "h")
    assert "| strategy | best at 50 trials (median) | best at 100 trials (median) |" in text
    assert "| t | 60 | 60 |" in text


def test_greedy_over_several_formats_is_refused_before_anything_is_trained(tmp_path, capsys):
    from bitscout.cli import main

    out = tmp_path / "run"
    config = Path(__file__).parents[1] / "examples" / "digits_formats.toml"
    argv = ["search", str(config), "--strategy", "greedy", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "greedy" in err and "search.strategy.name" in err
    assert not out.exists()
