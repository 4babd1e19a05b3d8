"""The multi-fidelity ladder with Optuna's samplers: the promotion rule, the pruner, and a
TPE search on a tiny digits MLP whose pruned trials are recorded, counted and never best."""

import json
import random

import numpy as np
import optuna
import pytest
import torch
from optuna.pruners._successive_halving import _is_trial_promotable_to_next_rung
from optuna.study import StudyDirection
from torch import nn

import bitscout
from bitscout.evaluate.evaluator import evaluate_model
from bitscout.evaluate.qat import Trainer, TrainSettings
from bitscout.quant.apply import QuantPlan, quantize_model
from bitscout.study.fidelity import RungPruner, kept, promotes, spent
from bitscout.study.store.base import EPOCHS, TrialRecord
from bitscout.study.training import Fidelity

EPOCHS_FULL = 3
TRAIN = {"epochs": EPOCHS_FULL, "lr": 3e-3, "batch_size": 64}


def _layer(widths: list[int]) -> dict:
    return {"config": {"name": ["integer"], "data_in_width": [4, 8], "weight_width": widths,
                       "bias_width": [8]}}  # fmt: skip


SPACE = {"setup": {"by": "name"},
         "seed": {"default": {"config": {"name": ["NA"]}}, "0": _layer([2, 3, 4, 8]),
                  "2": _layer([2, 3, 4, 8])}}  # fmt: skip


@pytest.fixture(scope="module")
def digits() -> dict:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    model = bitscout.train(
        model, (x[:900], y[:900]), bitscout.TrainOptions(epochs=8, learning_rate=3e-3)
    )
    return {"model": model, "train": (x[:900], y[:900]), "val": (x[900:1300], y[900:1300])}


def _search(digits: dict, **kwargs) -> bitscout.SearchResult:
    args = {"strategy": "tpe", "trials": 16, "seed": 0, "train": TRAIN, "fidelity": True,
            "train_data": digits["train"], "quiet": True, **kwargs}  # fmt: skip
    return bitscout.search(digits["model"], digits["val"], SPACE, **args)


# --- the promotion rule ------------------------------------------------------------------


def _by_hand(value: float, competing: list[float], eta: int, maximize: bool) -> bool:
    """Successive halving's rule written from its definition: the value goes on if fewer
    than `max(1, n // eta)` of the competing values are strictly better than it."""
    better = sum((v > value) if maximize else (v < value) for v in competing)
    return better < max(1, len(competing) // eta)


@pytest.mark.parametrize(
    ("value", "competing", "eta", "maximize", "expected"),
    [
        (0.5, [0.5], 3, True, True),  # the first value alone always goes on
        (0.4, [0.5, 0.4], 3, True, False),  # fewer than eta: only the best so far
        (0.6, [0.5, 0.6], 3, True, True),
        (0.9, [0.1, 0.5, 0.9], 3, True, True),  # 3 // 3 = 1 kept
        (0.5, [0.1, 0.5, 0.9], 3, True, False),
        (0.5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3, True, True),  # 6 // 3 = 2 kept: 0.6, 0.5
        (0.4, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3, True, False),
        (0.2, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3, False, True),  # minimized: 0.1, 0.2
        (0.3, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3, False, False),
        (0.5, [0.5, 0.5, 0.5, 0.1], 2, True, True),  # ties at the cut all go on
        (0.3, [0.1, 0.2, 0.3, 0.4], 2, True, True),  # 4 // 2 = 2 kept: 0.4, 0.3
    ],
)
def test_promotes_on_small_lists(value, competing, eta, maximize, expected):
    assert _by_hand(value, competing, eta, maximize) is expected
    assert promotes(value, competing, eta, maximize) is expected


def test_promotes_agrees_with_optunas_rule():
    rng = random.Random(0)
    for _ in range(2000):
        n, eta = rng.randint(1, 12), rng.randint(2, 4)
        competing = [rng.choice([0.1, 0.2, 0.3, 0.4]) if rng.random() < 0.3 else rng.random()
                     for _ in range(n)]  # fmt: skip
        value = rng.choice(competing)
        maximize = rng.random() < 0.5
        direction = StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE
        theirs = _is_trial_promotable_to_next_rung(value, list(competing), eta, direction)
        assert promotes(value, competing, eta, maximize) is theirs
        assert _by_hand(value, competing, eta, maximize) is theirs
    assert [kept(n, 3) for n in (1, 2, 3, 5, 6, 9, 10)] == [1, 1, 1, 1, 2, 3, 3]


def test_rung_pruner_prunes_at_the_ladders_rungs_only():
    """Rung 0 (the post-training score) is a rung; steps off the ladder and the last rung
    (full training) never prune."""
    pruner = RungPruner(Fidelity().rungs(9), 3)  # rungs 0, 1, 3, 9
    study = optuna.create_study(direction="maximize", pruner=pruner)
    decisions = []
    for value in (0.5, 0.9, 0.4, 0.8, 0.3, 0.95):
        trial = study.ask()
        trial.report(value, step=0)
        decisions.append(trial.should_prune())
        trial.report(0.0, step=2)  # not a rung
        assert not trial.should_prune()
        trial.report(0.0, step=9)  # full training
        assert not trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    seen: list[float] = []
    expected = []
    for value in (0.5, 0.9, 0.4, 0.8, 0.3, 0.95):
        seen.append(value)
        expected.append(not _by_hand(value, seen, 3, True))
    assert decisions == expected == [False, False, True, True, True, False]


def _record(number: int, epochs: int, cached: bool = False) -> TrialRecord:
    attrs = {EPOCHS: epochs, "cached": cached}
    return TrialRecord(number, number, "pruned", {}, attrs, None, None, None)


def test_spent_counts_epochs_per_rung():
    trials = [_record(0, 0), _record(1, 0), _record(2, 1), _record(3, 3), _record(4, 9),
              _record(5, 9, cached=True)]  # fmt: skip
    once = spent(trials, (0, 1, 3, 9), from_scratch=False)
    assert once["candidates_per_rung"] == {"0": 5, "1": 3, "3": 2, "9": 1}
    assert once["epochs_trained"] == 1 + 3 + 9
    assert once["epochs_full_training"] == 5 * 9
    again = spent(trials, (0, 1, 3, 9), from_scratch=True)  # each rung retrains from scratch
    assert again["epochs_trained"] == 1 + (1 + 3) + (1 + 3 + 9)


# --- a TPE search with the ladder --------------------------------------------------------


def _ptq_accuracy(digits: dict, result: bitscout.SearchResult, config: dict) -> float:
    plan = QuantPlan("name", _plan(result, config))
    x, y = digits["val"]
    return evaluate_model(quantize_model(digits["model"], plan), torch.tensor(x),
                          torch.tensor(y))["accuracy"]  # fmt: skip


def _plan(result: bitscout.SearchResult, config: dict) -> dict:
    space = result._space  # the searched space resolves a config into formats per layer
    return dict(space.resolved(config))


def test_tpe_with_fidelity_prunes_records_and_counts(digits):
    result = _search(digits)
    trials = result.trials
    assert len(trials) == 16  # pruned trials count towards n_trials
    pruned = trials[trials["state"] == "pruned"]
    complete = trials[trials["state"] == "complete"]
    assert len(pruned) >= 4 and len(complete) >= 2
    assert set(pruned["epochs"]) <= {0, 1} and set(complete["epochs"]) == {EPOCHS_FULL}
    assert pruned["accuracy"].notna().all() and pruned["objective"].isna().all()
    # never a winner: the best is the best complete trial
    best = complete.loc[complete["objective"].idxmax()]
    assert result.best is not None and result.best.objective[0] == pytest.approx(best["objective"])
    assert result.best.trial in set(complete["number"])
    assert result.summary["pruned"] == len(pruned)
    ladder = result.summary["ladder"]
    assert ladder["rungs"] == [0, 1, 3]
    fresh = trials[~trials["cached"].astype(bool)]
    assert ladder["epochs_trained"] == int(fresh["epochs"].sum())
    assert ladder["epochs_full_training"] == EPOCHS_FULL * len(fresh)


def test_pruning_follows_the_rule_trial_by_trial(digits):
    """Each trial, in the order it ran, reported its objective at rungs 0 and 1 and stopped
    exactly where the hand-written rule says, given the earlier trials' values there."""
    result = _search(digits)
    study = result.study
    assert study is not None
    at: dict[int, list[float]] = {0: [], 1: []}
    for trial in sorted(study.trials, key=lambda t: t.number):
        if trial.user_attrs.get("cached"):
            continue
        stop = None
        for step in (0, 1):
            value = trial.intermediate_values[step]
            at[step].append(value)
            if not _by_hand(value, at[step], 3, True):
                stop = step
                break
        expected = "PRUNED" if stop is not None else "COMPLETE"
        assert trial.state.name == expected, trial.number
        assert trial.user_attrs[EPOCHS] == (EPOCHS_FULL if stop is None else stop)


def test_a_pruned_trials_metrics_are_those_of_its_rung(digits):
    result = _search(digits)
    trials = result.trials
    dims = [c for c in trials.columns if "/" in c]
    at_zero = trials[(trials["state"] == "pruned") & (trials["epochs"] == 0)].iloc[0]
    config = {d: int(at_zero[d]) for d in dims}
    assert at_zero["accuracy"] == pytest.approx(_ptq_accuracy(digits, result, config))
    at_one = trials[(trials["state"] == "pruned") & (trials["epochs"] == 1)]
    assert not at_one.empty
    row = at_one.iloc[0]
    config = {d: int(row[d]) for d in dims}
    plan = _plan(result, config)
    candidate = quantize_model(digits["model"], QuantPlan("name", plan))
    x, y = (torch.tensor(a) for a in digits["train"])
    settings = TrainSettings(epochs=EPOCHS_FULL, learning_rate=3e-3, batch_size=64, seed=0)
    trained = Trainer(x, y, settings).train(candidate, repr(sorted(plan.items())), lambda e: e < 1)
    assert trained == 1
    xv, yv = (torch.tensor(a) for a in digits["val"])
    assert row["accuracy"] == pytest.approx(evaluate_model(candidate.eval(), xv, yv)["accuracy"])


def test_resumed_study_keeps_pruned_trials_pruned(digits, tmp_path):
    first = _search(digits, trials=8, out=tmp_path)
    before = first.trials.set_index("number")[["state", "epochs", "accuracy"]]
    again = _search(digits, trials=14, out=tmp_path)
    after = again.trials.set_index("number")[["state", "epochs", "accuracy"]]
    assert len(after) == 14
    assert after.loc[before.index].equals(before)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["pruned"] == int((after["state"] == "pruned").sum())
    assert summary["ladder"]["candidates_per_rung"]["0"] == int(
        (~again.trials["cached"].astype(bool)).sum()
    )


def test_hyperband_runs(digits):
    result = _search(digits, fidelity={"pruner": "hyperband", "min_epochs": 1}, trials=12)
    trials = result.trials
    assert len(trials) == 12
    assert set(trials["state"]) <= {"complete", "pruned"}
    assert (trials["state"] == "complete").any()
    assert set(trials.loc[trials["state"] == "pruned", "epochs"]) <= {1}  # hyperband: not 0
    assert result.best is not None and result.best.trial in set(
        trials.loc[trials["state"] == "complete", "number"]
    )


def test_epochs_column_without_a_ladder(digits):
    """trials.csv's epochs: 0 for post-training quantization, the full count when every
    candidate trains fully."""
    ptq = bitscout.search(digits["model"], digits["val"], SPACE, strategy="random", trials=3,
                          quiet=True)  # fmt: skip
    assert list(ptq.trials["epochs"]) == [0, 0, 0] and ptq.summary["ladder"] is None
    qat = _search(digits, trials=3, fidelity=None, strategy="random")
    assert list(qat.trials["epochs"]) == [EPOCHS_FULL] * 3 and qat.summary["ladder"] is None


@pytest.mark.parametrize(
    ("fidelity", "epochs", "expected"),
    [
        (Fidelity(), 10, (0, 1, 3, 10)),  # not 9: a rung a factor eta below full training
        (Fidelity(), 9, (0, 1, 3, 9)),
        (Fidelity(), 3, (0, 1, 3)),
        (Fidelity(), 2, (0, 2)),
        (Fidelity(), 1, (0, 1)),
        (Fidelity(ptq_rung=False), 10, (1, 3, 10)),
        (Fidelity(min_epochs=2, reduction_factor=2), 10, (0, 2, 4, 10)),
    ],
)
def test_the_ladders_rungs(fidelity, epochs, expected):
    assert fidelity.rungs(epochs) == expected


def test_two_workers_share_one_ladder(digits, tmp_path):
    """Two worker processes climb the same ladder: the study ends with n_trials trials that
    trained (complete, or pruned at a rung), the winner is complete, and a config trained fully
    by both searches scores the same as with one worker (training is seeded per config)."""
    alone = _search(digits, trials=12).trials
    shared = _search(digits, trials=12, n_jobs=2, out=tmp_path).trials
    climbed = shared[shared["epochs"].notna()]  # an extra trial pruned for room has none
    assert len(climbed) == 12
    assert set(climbed["state"]) <= {"complete", "pruned"}
    assert set(climbed.loc[climbed["state"] == "pruned", "epochs"]) <= {0, 1}
    assert set(climbed.loc[climbed["state"] == "complete", "epochs"]) == {EPOCHS_FULL}
    dims = [c for c in shared.columns if "/" in c]
    full = [f[f["state"] == "complete"].set_index(dims)["accuracy"] for f in (alone, shared)]
    common = full[0].index.intersection(full[1].index).unique()
    for config in common:
        assert set(full[1].loc[[config]]) == set(full[0].loc[[config]]), config
