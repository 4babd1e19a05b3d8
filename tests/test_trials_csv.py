"""trials.csv at the end of a search: kept as appended when it already holds every trial (a
one-worker search), written again when not, and the same file either way."""

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

import bitscout
from bitscout.objective import MetricSpec, Objective
from bitscout.quant.space import SearchSpace
from bitscout.results import trials as trials_module
from bitscout.results.trials import TrialsCsv


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=g)
    return x, (x[:, 0] - x[:, 2] > 0).long()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)).eval()


SPACE = {"seed": {"default": {"config": {"name": ["integer"], "weight_width": [2, 3, 4, 8],
                                         "data_in_width": [4, 8], "bias_width": [8]}}}}  # fmt: skip


@pytest.fixture
def finishes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Each `TrialsCsv.finish` of the test: whether it kept the file, the file it left, and
    the file that writing every trial again from the store gives."""
    seen: list[dict[str, Any]] = []
    original = TrialsCsv.finish

    def finish(self: TrialsCsv, frame: pd.DataFrame | None = None) -> None:
        kept = frame is not None and self._holds(frame)
        original(self, frame)
        left = self.path.read_text()
        self.rewrite()
        seen.append({"kept": kept, "left": left, "rewritten": self.path.read_text()})

    monkeypatch.setattr(TrialsCsv, "finish", finish)
    return seen


@pytest.mark.parametrize(
    ("strategy", "trials"), [("tpe", 14), ("bruteforce", None), ("random", 10)]
)
def test_a_one_worker_search_keeps_the_appended_file_which_is_the_rewritten_one(
    model: nn.Module, tmp_path: Path, finishes: list, strategy: str, trials: int | None
) -> None:
    bitscout.search(model, _data(), SPACE, objective={"accuracy": 1.0, "average_bitwidth": -0.01},
                    strategy=strategy, trials=trials, seed=3, out=tmp_path / "run",
                    quiet=True)  # fmt: skip
    (done,) = finishes
    assert done["kept"]
    assert done["left"] == done["rewritten"]
    rows = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert len(rows) == (trials or 64) and set(rows["state"]) == {"complete"}
    if strategy == "tpe":  # a config proposed again: its cached rows are kept as well
        assert rows["cached"].any()


def test_a_resumed_search_keeps_the_rows_of_both_runs(
    model: nn.Module, tmp_path: Path, finishes: list
) -> None:
    for trials in (5, 12):
        bitscout.search(model, _data(), SPACE, strategy="tpe", trials=trials, seed=1,
                        out=tmp_path / "run", quiet=True)  # fmt: skip
    assert [f["kept"] for f in finishes] == [True, True]
    assert all(f["left"] == f["rewritten"] for f in finishes)
    assert pd.read_csv(tmp_path / "run" / "trials.csv")["number"].tolist() == list(range(12))


class Source:
    """A study of hand-made trials (a `TrialSource`): trial 0 complete, trial 1 running."""

    def __init__(self) -> None:
        self.rows = [self._row(0, "complete"), self._row(1, "running")]

    @staticmethod
    def _row(number: int, state: str) -> dict[str, Any]:
        done = state == "complete"
        return {"number": number, "state": state, "params": {},
                "metrics": {"accuracy": 0.5 + number / 10} if done else {},
                "values": [0.5] if done else None, "cached": False, "duration_s": 0.1,
                "reason": None, "epochs": 0}  # fmt: skip

    def is_chunked(self) -> bool:
        return False

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(trials_module.TRIAL_COLUMNS))

    def trial_row(self, number: int) -> dict[str, Any]:
        return self.rows[number]

    def chunks(self, skip: Any = ()) -> list:
        return []


def _table(path: Path, source: Source) -> TrialsCsv:
    layer = {"name": ["integer"], "weight_width": [2, 4], "data_in_width": [8], "bias_width": [8]}
    space = SearchSpace(nn.Sequential(nn.Linear(2, 2)), "name", {"default": layer})
    objective = Objective((MetricSpec("accuracy", 1.0, "maximize"),), True, "maximize", ())
    return TrialsCsv(path, source, space, objective, ["accuracy"])


def test_a_row_written_while_its_trial_ran_is_written_again(tmp_path: Path) -> None:
    source = Source()
    table = _table(tmp_path / "trials.csv", source)
    table.rewrite()  # a resumed study: trial 1 still running (another worker, or lost)
    source.rows[1] = source._row(1, "complete")
    table.finish(trials_module.trials_frame(source, table.space, table.objective, ["accuracy"]))
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert rows["state"].tolist() == ["complete", "complete"]
    assert rows["accuracy"].tolist() == [0.5, 0.6]


def test_a_trial_another_worker_finished_is_added(tmp_path: Path) -> None:
    source = Source()
    source.rows = source.rows[:1]
    table = _table(tmp_path / "trials.csv", source)
    table.rewrite()
    source.rows.append(source._row(1, "complete"))  # never appended by this worker
    frame = trials_module.trials_frame(source, table.space, table.objective, ["accuracy"])
    table.finish(frame)
    assert pd.read_csv(tmp_path / "trials.csv")["number"].tolist() == [0, 1]


def test_each_appended_row_is_in_the_file_at_once_and_a_rewrite_starts_a_new_file(
    tmp_path: Path,
) -> None:
    source = Source()
    source.rows = source.rows[:1]
    path = tmp_path / "trials.csv"
    table = _table(path, source)
    table.rewrite()
    source.rows.append(source._row(1, "complete"))
    table.append(1)  # the file stays open for the next row: a reader sees this one already
    assert pd.read_csv(path)["number"].tolist() == [0, 1]
    source.rows.append(source._row(2, "complete"))
    table.rewrite()  # atomically replaced: later rows go to the new file, not the old one
    source.rows.append(source._row(3, "complete"))
    table.append(3)
    assert pd.read_csv(path)["number"].tolist() == [0, 1, 2, 3]
    table.finish()
    assert table._appending is None  # closed when the search ends


def test_a_failing_search_closes_trials_csv_with_its_rows(
    model: nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []
    original = TrialsCsv.append

    def append(self: TrialsCsv, number: int) -> None:
        original(self, number)
        if self._appending is not None:
            opened.append(self._appending[0])
        if number == 3:
            raise KeyboardInterrupt  # the user stops the search after its fourth trial

    monkeypatch.setattr(TrialsCsv, "append", append)
    with pytest.raises(KeyboardInterrupt):
        bitscout.search(model, _data(), SPACE, strategy="random", trials=10, seed=0,
                        out=tmp_path / "run", quiet=True)  # fmt: skip
    assert opened and all(f.closed for f in opened)
    assert pd.read_csv(tmp_path / "run" / "trials.csv")["number"].tolist()[:4] == [0, 1, 2, 3]
