"""The validation data is the caller's and stays intact (issue 20, item 3): searched on a private
copy, a model or metric that edits it in place refused by name, targets outside the model's
classes, loaders that draw rows and endless iterables refused up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

import bitscout
from bitscout.data.containers import prepare
from bitscout.errors import ConfigError

LAYER = {"name": ["integer"], "data_in_width": [8], "weight_width": [4, 8], "bias_width": [8]}
SPACE = {"setup": {"by": "name"}, "seed": {"default": {"config": {"name": ["NA"]}},
                                           "fc1": {"config": LAYER}}}  # fmt: skip


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class InPlace(Net):
    """Adds 0.3 to its input in place: each forward shifts the rows it is given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.add_(0.3)
        return super().forward(x)


class InPlaceWhenQuantized(Net):
    """Edits a batch of rows only once fc1 is quantized: the float pass cannot see it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.fc1) is not nn.Linear and len(x) > 1:
            x.mul_(0.5)
        return super().forward(x)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:400] / 16.0).astype(np.float32), y[:400]


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = bitscout.train(Net(), _digits(), bitscout.TrainOptions(epochs=10))
    return model.state_dict()


def _model(cls: type[Net], state: dict[str, torch.Tensor]) -> Net:
    model = cls()
    model.load_state_dict(state)
    return model.eval()


def _search(model: nn.Module, data: object, **kwargs: object) -> bitscout.SearchResult:
    return bitscout.search(model, data, SPACE, strategy="bruteforce", quiet=True, **kwargs)


def test_held_rows_never_share_the_callers_memory():
    x, y = _digits()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for given in ((x, y), (tx, ty)):
        data = prepare(given)
        assert data.x is not None and data.y is not None
        assert not np.shares_memory(data.x.numpy(), x) and not np.shares_memory(data.y.numpy(), y)
        metric_x, metric_y = data.for_metrics()
        assert type(metric_x) is type(given[0]) and type(metric_y) is type(given[1])
        assert np.array_equal(np.asarray(metric_x), x) and metric_x is not given[0]
        assert not np.shares_memory(np.asarray(metric_x), x)


def test_a_model_editing_its_input_is_refused_and_the_callers_rows_stay(state):
    x, y = _digits()
    tx, ty = torch.from_numpy(x.copy()), torch.from_numpy(y)
    before = tx.clone()
    rule = r"^model: edits the validation data .* in place \(its SHA-256 changed before the search"
    with pytest.raises(ConfigError, match=rule):
        _search(_model(InPlace, state), (tx, ty))
    assert torch.equal(tx, before)  # the caller's tensor is never the one edited


def test_a_model_editing_its_input_once_quantized_is_refused_at_the_end(state):
    x, y = _digits()
    with pytest.raises(ConfigError, match=r"^model: .*SHA-256 changed during the search"):
        _search(_model(InPlaceWhenQuantized, state), (x, y))


def test_a_metric_editing_its_data_is_refused_by_name(state):
    x, y = _digits()
    before = x.copy()

    def shifts(model: nn.Module, data: tuple[np.ndarray, np.ndarray]) -> float:
        data[0][:] += 1.0
        return 0.0

    with pytest.raises(ConfigError, match=r"^metrics\.shifts: edits the validation data"):
        _search(_model(Net, state), (x, y), metrics={"shifts": shifts})
    assert np.array_equal(x, before)


def test_a_metric_reading_its_data_scores_what_the_rows_give(state):
    x, y = _digits()

    def agreement(model: nn.Module, data: tuple[np.ndarray, np.ndarray]) -> float:
        with torch.no_grad():
            return float((model(torch.from_numpy(data[0])).argmax(1).numpy() == data[1]).mean())

    result = _search(_model(Net, state), (x, y), metrics={"agreement": agreement})
    assert result.trials["agreement"].tolist() == result.trials["accuracy"].tolist()


@pytest.mark.parametrize(("bad", "shown"), [(-1, "-1..8"), (10, "0..10")])
def test_labels_outside_the_models_classes_are_refused(state, bad, shown):
    x, y = _digits()
    y = np.where(y == 9, bad, y)
    rule = rf"^data: targets must be class indices in 0\.\.9 .*got labels {shown}"
    with pytest.raises(ConfigError, match=rule):
        _search(_model(Net, state), (x, y))
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=50)
    with pytest.raises(ConfigError, match=rule):  # streamed batch by batch too
        _search(_model(Net, state), loader, max_data_bytes=10_000)


def test_test_split_labels_are_checked_before_the_search(state):
    x, y = _digits()
    searched: list[int] = []

    def count(model: nn.Module, data: object) -> float:
        searched.append(1)
        return 0.0

    with pytest.raises(ConfigError, match=r"^test_data: targets must be class indices in 0\.\.9"):
        _search(_model(Net, state), (x, y), test_data=(x, np.where(y == 9, -1, y)),
                metrics={"count": count})  # fmt: skip
    assert len(searched) == 1  # the float pass only: no candidate was searched


def _loaders() -> dict[str, DataLoader]:
    x, y = _digits()
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    weighted = WeightedRandomSampler(torch.ones(len(ds)), len(ds))
    drawn = BatchSampler(RandomSampler(ds), batch_size=50, drop_last=False)
    return {
        "WeightedRandomSampler": DataLoader(ds, batch_size=50, sampler=weighted),
        "RandomSampler": DataLoader(ds, batch_sampler=drawn),
    }


@pytest.mark.parametrize("sampler", ["WeightedRandomSampler", "RandomSampler"])
def test_a_loader_that_draws_its_rows_is_refused(state, sampler):
    rule = rf"must read the rows in order.*its {sampler} draws them"
    with pytest.raises(ConfigError, match=rule):
        _search(_model(Net, state), _loaders()[sampler])


class Rows(IterableDataset):
    """The digits rows, `rounds` times over (None: without end, as a stream may be)."""

    def __init__(self, rounds: int | None) -> None:
        self.rounds = rounds
        self.read = 0

    def __iter__(self):
        x, y = _digits()
        round_ = 0
        while self.rounds is None or round_ < self.rounds:
            for i in range(len(y)):
                self.read += 1
                if self.read > 100_000:
                    raise AssertionError("read without end")
                yield torch.from_numpy(x[i]), int(y[i])
            round_ += 1


def test_an_endless_iterable_past_the_memory_budget_is_refused(state):
    endless = Rows(None)
    with pytest.raises(ConfigError, match="IterableDataset without __len__ might never end"):
        _search(_model(Net, state), DataLoader(endless, batch_size=50), max_data_bytes=10_000)
    assert endless.read < 1_000  # it stopped at the budget, not at the guard


def test_an_iterable_within_the_budget_is_held_and_scores_as_the_arrays(state):
    held = _search(_model(Net, state), DataLoader(Rows(1), batch_size=64))
    arrays = _search(_model(Net, state), _digits())
    assert held.trials["accuracy"].tolist() == arrays.trials["accuracy"].tolist()


def test_rows_that_do_not_fit_the_model_are_one_line(state):
    x, y = _digits()
    rule = r"^data: the model cannot run on rows of shape \(10,\) .*mat1 and mat2"
    with pytest.raises(ConfigError, match=rule):
        _search(_model(Net, state), (x[:, :10], y))
    with pytest.raises(ConfigError, match=rule.replace("data", "train data", 1)):
        bitscout.train(Net(), (x[:, :10], y), bitscout.TrainOptions(epochs=1))


def test_training_labels_outside_the_models_classes_are_one_line():
    x, y = _digits()
    rule = r"^train data: targets must be class indices in 0\.\.9 .*got labels 0\.\.10"
    with pytest.raises(ConfigError, match=rule):
        bitscout.train(Net(), (x, np.where(y == 9, 10, y)), bitscout.TrainOptions(epochs=1))
    # a loss of the user's own takes targets of its own meaning
    bitscout.train(Net(), (x, np.where(y == 9, 10, y)), bitscout.TrainOptions(epochs=1),
                   loss_fn=lambda out, t: ((out[:, 0] - t.float()) ** 2).mean())  # fmt: skip
