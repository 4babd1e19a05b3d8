"""A report's first picture drawn in a forked child: the same files as drawn in one process,
every child reaped, and whatever goes wrong in the child drawn (or raised) in the parent."""

import os
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from bitscout._core import processes
from bitscout.results import forked, plots
from bitscout.results.forked import Picture
from bitscout.study import prefetch

UNITS = {"accuracy": "fraction", "average_bitwidth": "bits"}


@pytest.fixture
def two_cpus(monkeypatch):
    """Forks as on a Linux machine with two CPUs (CI has two; a laptop may have one)."""
    monkeypatch.setattr(forked, "_cpus", lambda: 2)


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """The pids of the children `drawn` forks, as the parent sees them."""
    pids: list[int] = []
    fork = forked._fork

    def recorded() -> int | None:
        pid = fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(forked, "_fork", recorded)
    return pids


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"accuracy": rng.uniform(0.5, 1, 30),
                         "average_bitwidth": rng.choice([2.0, 4.0, 8.0], 30)})  # fmt: skip


def report_pictures(out: Path) -> list[Picture]:
    df = frame()
    accuracy = df["accuracy"].to_numpy()
    best = np.maximum.accumulate(accuracy)
    return [
        (out / "metrics.png", lambda p: plots.metrics_png(df, list(UNITS), UNITS, p)),
        (out / "best.png", lambda p: plots.best_so_far_png(accuracy, best, "accuracy", p)),
        (out / "importances.png", lambda p: plots.importances_png({"a": 0.7, "b": 0.3}, p)),
    ]


def writer(where: list[int]) -> Callable[[Path], Path]:
    """Writes the pid of the process that drew it into the file."""

    def draw(path: Path) -> Path:
        path.write_text(str(os.getpid()))
        where.append(os.getpid())
        return path

    return draw


def reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_drawn_with_a_child_gives_the_same_pixels_as_drawn_in_one_process(
    tmp_path, two_cpus, forks, monkeypatch
):
    (tmp_path / "apart").mkdir()
    (tmp_path / "here").mkdir()
    with plots.written_behind():
        apart = forked.drawn(report_pictures(tmp_path / "apart"))
    assert len(forks) == 1 and reaped(forks[0])
    monkeypatch.setattr(forked, "_cpus", lambda: 1)
    with plots.written_behind():
        here = forked.drawn(report_pictures(tmp_path / "here"))
    assert len(forks) == 1  # one CPU: nothing forked
    assert [p.name for p in apart] == [p.name for p in here] == [
        "metrics.png", "best.png", "importances.png"]  # fmt: skip
    for a, h in zip(apart, here, strict=True):
        np.testing.assert_array_equal(matplotlib.image.imread(a), matplotlib.image.imread(h))


def test_the_first_picture_is_drawn_in_another_process_and_the_rest_here(tmp_path, two_cpus, forks):
    pids: list[int] = []
    pictures = [(tmp_path / f"{i}.txt", writer(pids)) for i in range(3)]
    assert forked.drawn(pictures) == [p for p, _ in pictures]
    drawers = [int(p.read_text()) for p, _ in pictures]
    assert drawers[0] == forks[0] != os.getpid()
    assert drawers[1:] == [os.getpid()] * 2 and pids == [os.getpid()] * 2
    assert reaped(forks[0])


def test_a_picture_that_fails_in_the_child_is_drawn_again_here(tmp_path, two_cpus, forks):
    parent = os.getpid()

    def only_here(path: Path) -> Path:
        if os.getpid() != parent:
            raise RuntimeError("the child cannot draw this")
        path.write_text("drawn here")
        return path

    pictures = [(tmp_path / "a.txt", only_here), (tmp_path / "b.txt", writer([]))]
    forked.drawn(pictures)
    assert (tmp_path / "a.txt").read_text() == "drawn here" and reaped(forks[0])


def test_an_error_in_a_picture_is_raised_here_as_in_one_process(tmp_path, two_cpus, forks):
    def broken(path: Path) -> Path:
        raise ValueError(f"cannot draw {path.name}")

    with pytest.raises(ValueError, match=r"cannot draw a\.png"):
        forked.drawn([(tmp_path / "a.png", broken), (tmp_path / "b.txt", writer([]))])
    with pytest.raises(ValueError, match=r"cannot draw b\.png"):  # here, the child reaped
        forked.drawn([(tmp_path / "a.txt", writer([])), (tmp_path / "b.png", broken)])
    assert len(forks) == 2 and all(map(reaped, forks))
    assert (tmp_path / "a.txt").exists() and not (tmp_path / "b.png").exists()


def test_a_child_killed_by_a_signal_leaves_its_picture_to_the_parent(tmp_path, two_cpus, forks):
    parent = os.getpid()

    def dies_in_child(path: Path) -> Path:
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        path.write_text("drawn here")
        return path

    forked.drawn([(tmp_path / "a.txt", dies_in_child), (tmp_path / "b.txt", writer([]))])
    assert (tmp_path / "a.txt").read_text() == "drawn here" and reaped(forks[0])


def test_no_fork_for_one_picture_one_cpu_or_a_fork_that_fails(tmp_path, monkeypatch):
    def refused() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", refused)
    monkeypatch.setattr(forked, "_cpus", lambda: 2)
    pids: list[int] = []
    forked.drawn([(tmp_path / "one.txt", writer(pids))])
    forked.drawn([(tmp_path / f"{i}.txt", writer(pids)) for i in range(3)])
    assert pids == [os.getpid()] * 4
    assert {p.read_text() for p in tmp_path.iterdir()} == {str(os.getpid())}


def test_a_fork_waits_for_the_imports_running_in_the_background(tmp_path, two_cpus, monkeypatch):
    done: list[str] = []
    at_fork: list[list[str]] = []

    def slow_import(name: str) -> None:
        time.sleep(0.2)
        done.append(name)

    def refused() -> int:  # notes what was imported when the fork came, then draws here
        at_fork.append(list(done))
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(processes.importlib, "import_module", slow_import)
    monkeypatch.setattr(os, "fork", refused)
    monkeypatch.setattr(prefetch, "FINAL_MODULES", ("bitscout_not_imported_yet",))
    prefetch.prefetch(report=False)  # as a search starts
    assert done == []  # importing in its thread
    forked.drawn([(tmp_path / f"{i}.txt", writer([])) for i in range(2)])
    assert at_fork == [["bitscout_not_imported_yet"]]
    assert all((tmp_path / f"{i}.txt").exists() for i in range(2))
