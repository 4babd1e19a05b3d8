"""Quantization-aware searches from Python (issue 21, item 1): the same config trains to the
same metrics whatever the strategy, the order, the process or the run; a search resumes
reusing its recorded candidates and refuses other training settings; every bad training
option is one ConfigError."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bitscout
from bitscout.errors import ConfigError
from bitscout.evaluate import qat


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 12), nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _rows(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


TRAIN_DATA, VAL = _rows(0, 160), _rows(1, 80)
TRAIN = {"epochs": 2, "lr": 1e-2, "batch_size": 32}
LAYER = {"name": ["integer"], "data_in_width": [2, 4, 8], "weight_width": [2, 4],
         "bias_width": [8]}  # fmt: skip
SPACE = {"setup": {"by": "name"},
         "seed": {"default": {"config": {"name": ["NA"]}}, "fc1": {"config": LAYER}}}  # fmt: skip
CONFIG = ["fc1/data_in_width", "fc1/weight_width"]
METRICS = ["accuracy", "loss", "average_bitwidth"]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return Tiny()


def _search(model: nn.Module, **kw) -> bitscout.SearchResult:
    kw.setdefault("train", TRAIN)
    kw.setdefault("train_data", TRAIN_DATA)
    kw.setdefault("seed", 0)
    return bitscout.search(model, VAL, kw.pop("space", SPACE), quiet=True, **kw)


def _by_config(frame: pd.DataFrame) -> pd.DataFrame:
    done = frame[frame["state"] == "complete"]
    return done.set_index(CONFIG)[METRICS].sort_index()


@pytest.fixture(scope="module")
def reference(model) -> pd.DataFrame:
    """Every config of the space, trained by brute force in index order."""
    return _by_config(_search(model, strategy="bruteforce").trials)


def test_training_changes_the_scores(model, reference):
    ptq = _by_config(bitscout.search(model, VAL, SPACE, strategy="bruteforce", quiet=True).trials)
    assert len(reference) == 6 and not reference["loss"].equals(ptq["loss"])


@pytest.mark.parametrize(
    ("strategy", "trials"),
    [
        ("bruteforce", None),
        ("greedy", None),
        ("tpe", 4),
        ("random", 4),
        ("nsgaii", 4),
        ("nsgaiii", 4),
        ("qmc", 4),
        ("grid", 4),
        ("gp", 3),
    ],
)
def test_every_strategy_trains_each_config_to_the_same_metrics(model, reference, strategy, trials):
    found = _by_config(_search(model, strategy=strategy, trials=trials).trials)
    assert len(found) >= 1
    pd.testing.assert_frame_equal(found, reference.loc[found.index])


@pytest.mark.parametrize("order", ["shuffled", "reversed"])
def test_another_order_gives_each_config_the_same_metrics(model, reference, order):
    # the same seed (it seeds the training too), another order of the candidates
    walked = _search(model, strategy="bruteforce", order=order).trials.sort_values("number")
    assert list(zip(*(walked[c] for c in CONFIG), strict=True)) != sorted(reference.index)
    pd.testing.assert_frame_equal(_by_config(walked), reference)


def _csv(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "trials.csv")
    return frame.drop(columns=["duration_s"]).sort_values("number").reset_index(drop=True)


def test_two_runs_write_the_same_trials(model, tmp_path):
    for name in ("a", "b"):
        _search(model, strategy="tpe", trials=4, out=tmp_path / name)
    pd.testing.assert_frame_equal(_csv(tmp_path / "a"), _csv(tmp_path / "b"))


def test_two_workers_give_each_config_the_same_metrics(model, reference, tmp_path):
    both = _search(model, strategy="bruteforce", n_jobs=2, out=tmp_path / "run")
    pd.testing.assert_frame_equal(_by_config(both.trials), reference)


# --- resume -----------------------------------------------------------------------------


@pytest.fixture
def trainings(monkeypatch) -> list[str]:
    """The identity of every candidate trained in this process."""
    seen: list[str] = []
    train = qat.Trainer.train

    def counted(self, model, identity, on_epoch=None):
        seen.append(identity)
        return train(self, model, identity, on_epoch)

    monkeypatch.setattr(qat.Trainer, "train", counted)
    return seen


def test_a_resumed_search_reuses_its_recorded_candidates(model, reference, tmp_path, trainings):
    out = tmp_path / "run"
    first = _search(model, strategy="random", trials=2, out=out)
    assert len(trainings) == 2
    again = _search(model, strategy="random", trials=5, out=out)
    frame = again.trials.sort_values("number").reset_index(drop=True)
    assert len(frame) == 5
    was = first.trials.sort_values("number").reset_index(drop=True)
    pd.testing.assert_frame_equal(frame.head(2)[CONFIG + METRICS], was[CONFIG + METRICS])
    # a candidate recorded before is never trained again: only the new configs were
    new = {tuple(r) for r in frame[CONFIG].tail(3).itertuples(index=False)}
    assert len(trainings) == 2 + len(new - {tuple(r) for r in was[CONFIG].itertuples(index=False)})
    pd.testing.assert_frame_equal(_by_config(frame), reference.loc[_by_config(frame).index])


def test_a_resumed_sampler_does_not_replay_its_first_proposals(model, tmp_path):
    out = tmp_path / "run"
    _search(model, strategy="random", trials=2, out=out)
    frame = _search(model, strategy="random", trials=4, out=out).trials.sort_values("number")
    configs = [tuple(r) for r in frame[CONFIG].itertuples(index=False)]
    assert configs[2:] != configs[:2]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"train": {**TRAIN, "lr": 2e-2}}, "learning_rate"),
        ({"train": {**TRAIN, "epochs": 3}}, "epochs"),
        ({"train": {**TRAIN, "optimizer": "sgd"}}, "optimizer"),
        ({"train_data": _rows(2, 160)}, "train"),
        ({"train": None, "train_data": None}, "train"),
    ],
    ids=["lr", "epochs", "optimizer", "train_data", "ptq"],
)
def test_a_resume_under_other_training_is_another_search(model, tmp_path, change, named):
    out = tmp_path / "run"
    _search(model, strategy="random", trials=2, out=out)
    before = (out / "study.journal").read_bytes()
    with pytest.raises(ConfigError) as err:
        _search(model, strategy="random", trials=4, out=out, **change)
    message = str(err.value)
    assert named in message and "another" in message and "\n" not in message, message
    assert (out / "study.journal").read_bytes() == before


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "key", "words"),
    [
        ({"train": {"optimizer": "adma"}}, "train.optimizer", "did you mean 'adam'"),
        ({"train": {"epochs": 0}}, "train.epochs", "must be an integer >= 1"),
        ({"train": {"epochs": -2}}, "train.epochs", "must be an integer >= 1"),
        ({"train": {"lr": 0}}, "train.lr", "must be a finite number > 0"),
        ({"train": {"lr": -1e-3}}, "train.lr", "must be a finite number > 0"),
        ({"train": {"lr": float("inf")}}, "train.lr", "must be a finite number > 0"),
        ({"train": {"lr": float("nan")}}, "train.lr", "must be a finite number > 0"),
        ({"train": {"epoch": 2}}, "train.epoch", "did you mean 'epochs'"),
        ({"train": {"max_epochs": 2}}, "train.max_epochs", "did you mean 'epochs'"),
        ({"train": {"lr_scheduler": "step"}}, "train.lr_scheduler", "linear"),
        ({"train": [("epochs", 2)]}, "train", "must be a dict"),
        ({"train": None}, "train_data", "train="),
        ({"train": None, "fidelity": True}, "fidelity", "needs quantization-aware training"),
        (
            {"fidelity": True, "objective": ["accuracy", "average_bitwidth"]},
            "fidelity",
            "one objective",
        ),
        ({"fidelity": {"min_epoch": 1}}, "fidelity.min_epoch", "did you mean 'min_epochs'"),
        ({"fidelity": True, "strategy": "greedy"}, "fidelity", "bruteforce"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_a_bad_training_option_is_one_config_error(model, tmp_path, kw, key, words):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        _search(model, out=out, **{"train": TRAIN, "strategy": "bruteforce", **kw})
    message = str(err.value)
    assert err.value.key == key, message
    assert words in message and "\n" not in message, message
    assert not out.exists()  # refused before anything is written


def test_train_without_train_data_is_refused(model, tmp_path):
    with pytest.raises(ConfigError) as err:
        _search(model, train={}, train_data=None, out=tmp_path / "run")
    assert err.value.key == "train_data" and "is required" in str(err.value)


def test_train_data_too_large_to_hold_is_refused(model, reference):
    dataset = torch.utils.data.TensorDataset(*TRAIN_DATA)
    with pytest.raises(ConfigError) as err:
        _search(model, train_data=dataset, max_data_bytes=1000)
    assert err.value.key == "train_data" and "max_data_bytes" in str(err.value)
    found = _search(model, strategy="bruteforce", train_data=dataset)  # held: it fits
    pd.testing.assert_frame_equal(_by_config(found.trials), reference)  # as the (x, y) pair


def test_train_without_train_data_writes_nothing(model, tmp_path):
    with pytest.raises(ConfigError):
        _search(model, train={}, train_data=None, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_model_with_nothing_to_train_is_refused():
    torch.manual_seed(0)
    frozen = Tiny().requires_grad_(False)
    with pytest.raises(ConfigError) as err:
        _search(frozen, strategy="bruteforce")
    assert err.value.key == "model" and "requires grad" in str(err.value)


@pytest.mark.parametrize("how", ["loss_fn", "lr"])
def test_a_loss_that_becomes_nan_stops_the_search_with_a_config_error(model, how):
    kw = {"loss_fn": lambda out, y: F.cross_entropy(out, y) * float("nan")}
    if how == "lr":
        kw = {"train": {**TRAIN, "lr": 1e30}}
    with pytest.raises(ConfigError) as err:
        _search(model, strategy="bruteforce", **kw)
    assert "made the training loss" in str(err.value) and "\n" not in str(err.value)
