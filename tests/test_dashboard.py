"""`bitscout dashboard DIR`: the run's own store, served on 127.0.0.1 unless asked otherwise."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage

from bitscout.cli import main


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    out.mkdir()
    storage = JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    optuna.create_study(storage=storage, study_name="bitscout")
    return out


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []
    fake = types.ModuleType("optuna_dashboard")
    fake.run_server = lambda storage, host, port: calls.append((storage, host, port))
    monkeypatch.setitem(sys.modules, "optuna_dashboard", fake)
    return calls


def test_serves_the_runs_journal_on_localhost(run_dir, served):
    assert main(["dashboard", str(run_dir)]) == 0
    [(storage, host, port)] = served
    assert (host, port) == ("127.0.0.1", 8080)
    assert [s.study_name for s in storage.get_all_studies()] == ["bitscout"]


def test_host_port_and_storage_can_be_given(run_dir, served, tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(storage=url, study_name="elsewhere")
    args = ["--storage", url, "--host", "0.0.0.0", "--port", "9001"]
    assert main(["dashboard", str(tmp_path / "anything"), *args]) == 0
    [(storage, host, port)] = served
    assert (host, port) == ("0.0.0.0", 9001)
    assert [s.study_name for s in storage.get_all_studies()] == ["elsewhere"]


def test_missing_optional_dependency_is_one_line(run_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import raises ImportError
    assert main(["dashboard", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'bitscout[dashboard]'" in err[0]


def test_a_directory_without_a_study_is_refused(tmp_path, served, capsys):
    assert main(["dashboard", str(tmp_path)]) == 2
    assert "no study here" in capsys.readouterr().err
    assert served == []
