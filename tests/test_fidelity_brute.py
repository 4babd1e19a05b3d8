"""The brute force's fidelity ladder on a small digits space: exactly `max(1, n // eta)`
candidates go on per rung, chosen by an independent re-computation of their scores; the
winner is the best finalist; an interrupted ladder, run again, ends as an uninterrupted one."""

import pytest
import torch
from test_fidelity import EPOCHS_FULL, SPACE, TRAIN, digits  # noqa: F401 - the fixture

import bitscout
from bitscout.evaluate.evaluator import evaluate_model
from bitscout.evaluate.qat import Trainer, TrainSettings
from bitscout.quant.apply import QuantPlan, quantize_model
from bitscout.study.strategies import ladder

SIZE = 64  # 2 x 4 choices per layer, two layers


def _ladder(data: dict, **kwargs) -> bitscout.SearchResult:
    args = {"strategy": "bruteforce", "seed": 0, "train": TRAIN, "fidelity": True,
            "train_data": data["train"], "quiet": True, **kwargs}  # fmt: skip
    return bitscout.search(data["model"], data["val"], SPACE, **args)


def _config(row) -> dict:
    return {c: int(row[c]) for c in row.index if "/" in c}


def _accuracy(data: dict, result: bitscout.SearchResult, config: dict, epochs: int) -> float:
    """The candidate's validation accuracy after `epochs` of training (0: post-training),
    computed here from the model, the formats and the trainer, without the search."""
    plan = dict(result._space.resolved(config))
    candidate = quantize_model(data["model"], QuantPlan("name", plan))
    if epochs:
        x, y = (torch.tensor(a) for a in data["train"])
        settings = TrainSettings(epochs=EPOCHS_FULL, learning_rate=3e-3, batch_size=64, seed=0)
        Trainer(x, y, settings).train(candidate, repr(sorted(plan.items())), lambda e: e < epochs)
    xv, yv = (torch.tensor(a) for a in data["val"])
    return evaluate_model(candidate.eval(), xv, yv)["accuracy"]


def _top(scores: list[tuple[float, int, tuple]], n: int) -> set[tuple]:
    """The best n by score, earlier candidates (search order) first on ties."""
    ranked = sorted(scores, key=lambda s: (-s[0], s[1]))
    return {key for _, _, key in ranked[:n]}


@pytest.fixture(scope="module")
def climbed(digits):  # noqa: F811 - the imported fixture
    return _ladder(digits)


def test_each_rung_keeps_n_over_eta_chosen_by_their_scores(digits, climbed):  # noqa: F811
    trials = climbed.trials
    assert len(trials) == SIZE and trials["state"].isin(["pruned", "complete"]).all()
    counts = {r: int((trials["epochs"] >= r).sum()) for r in (0, 1, 3)}
    assert counts == {0: SIZE, 1: SIZE // 3, 3: SIZE // 3 // 3}  # 64, 21, 7
    assert set(trials.loc[trials["state"] == "complete", "epochs"]) == {EPOCHS_FULL}
    by_index = {climbed._space.index(_config(r)): r for _, r in trials.iterrows()}
    # rung 0: every candidate's post-training accuracy, recomputed here
    ptq = [(_accuracy(digits, climbed, _config(r), 0), i, i) for i, r in by_index.items()]
    went_on = {i for i, r in by_index.items() if r["epochs"] >= 1}
    assert went_on == _top(ptq, SIZE // 3)
    for score, i, _ in ptq:
        if by_index[i]["epochs"] == 0:
            assert by_index[i]["accuracy"] == pytest.approx(score)
    # rung 1: the survivors trained one epoch, recomputed here
    one = [(_accuracy(digits, climbed, _config(by_index[i]), 1), i, i) for i in went_on]
    finalists = {i for i in went_on if by_index[i]["epochs"] == EPOCHS_FULL}
    assert finalists == _top(one, SIZE // 9)
    for score, i, _ in one:
        if by_index[i]["epochs"] == 1:
            assert by_index[i]["accuracy"] == pytest.approx(score)


def test_the_winner_is_the_best_finalist_after_full_training(digits, climbed):  # noqa: F811
    trials = climbed.trials
    complete = trials[trials["state"] == "complete"]
    full = {int(r["number"]): _accuracy(digits, climbed, _config(r), EPOCHS_FULL)
            for _, r in complete.iterrows()}  # fmt: skip
    for number, accuracy in full.items():
        recorded = complete.loc[complete["number"] == number, "accuracy"].item()
        assert recorded == pytest.approx(accuracy)
    best = max(full.values())
    assert climbed.best is not None and climbed.best.trial in full
    assert climbed.best.metrics["accuracy"] == pytest.approx(best)
    assert climbed.summary["ladder"] == {
        "rungs": [0, 1, 3],
        "candidates_per_rung": {"0": 64, "1": 21, "3": 7},
        "epochs_trained": 21 * 1 + 7 * 3,  # each rung trains from the float weights again
        "epochs_full_training": 64 * 3,
        "ratio": pytest.approx((21 + 21) / 192),
    }


def _outcome(result: bitscout.SearchResult) -> dict:
    return {tuple(_config(r).values()): (r["state"], int(r["epochs"]), r["accuracy"])
            for _, r in result.trials.iterrows()}  # fmt: skip


def test_an_interrupted_ladder_resumes_to_the_same_trials(digits, climbed, tmp_path, monkeypatch):  # noqa: F811
    real = ladder._trained
    calls = []

    def interrupted(ctx, index, epochs):
        calls.append(index)
        if len(calls) == 21 + 3:  # during the last rung, after rung 1 is recorded
            raise KeyboardInterrupt
        return real(ctx, index, epochs)

    monkeypatch.setattr(ladder, "_trained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _ladder(digits, out=tmp_path)
    monkeypatch.setattr(ladder, "_trained", real)
    half = bitscout.SearchResult.load(tmp_path)
    assert len(half.trials) == 64 - 7 and (half.trials["state"] == "pruned").all()
    resumed = _ladder(digits, out=tmp_path)
    assert _outcome(resumed) == _outcome(climbed)
    assert climbed.best is not None and resumed.best is not None
    assert resumed.best.config == climbed.best.config


def test_the_first_n_trials_of_a_shuffled_order(digits):  # noqa: F811
    result = _ladder(digits, trials=30, order="shuffled", seed=3)
    trials = result.trials
    assert len(trials) == 30
    assert {r: int((trials["epochs"] >= r).sum()) for r in (0, 1, 3)} == {0: 30, 1: 10, 3: 3}
    assert result.best is not None
    assert result.best.trial in set(trials.loc[trials["state"] == "complete", "number"])
