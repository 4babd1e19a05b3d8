"""Hostile cases that used to lose or mix data: a torn journal, a resume on other data,
unbounded n_jobs (issue 10). Leaked passwords and tracebacks where one line belongs are in
tests/test_hardening_errors.py."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from cli_support import (
    base_doc,
    edit,
    error_problems,
    run_cli,
    write_config,
)
from hardening_support import (
    _can_mount_tmpfs,
    _journal,
    copy_run,
    run_dir,  # noqa: F401 - the fixture
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bitscout.objective import MetricSpec, Objective
from bitscout.study.settings import JOBS_PER_CPU, cpu_count, parse_settings
from bitscout.study.store.deferred import WriteBehindFile
from bitscout.study.store.optuna_store import repair_journal
from bitscout.study.store.storage import (
    open_storage,
    open_study,
    settle_fingerprint,
)

OBJECTIVE = Objective((MetricSpec("accuracy", 1.0, "maximize"),))


# --- 1. a torn journal --------------------------------------------------------------------


def _journal_with_trials(path: Path, n: int) -> None:
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(value=float(i), user_attrs={"i": i}))


def _values(path: Path) -> list[float]:
    study = optuna.load_study(study_name="s", storage=_journal(path))
    return [t.value for t in study.get_trials(deepcopy=False)]


def test_a_journal_cut_at_every_byte_of_its_last_record_is_repaired(tmp_path):
    whole = tmp_path / "whole.journal"
    _journal_with_trials(whole, 3)
    data = whole.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1  # where the last record starts
    assert len(data) - last > 50
    for cut in range(last + 1, len(data)):
        path = tmp_path / f"cut{cut}" / "study.journal"
        path.parent.mkdir()
        path.write_bytes(data[:cut])
        notes: list[str] = []
        storage = open_storage(str(path), notify=notes.append)
        study = optuna.load_study(study_name="s", storage=storage)
        study.add_trial(optuna.trial.create_trial(value=99.0))  # the write that used to glue
        kept = cut == len(data) - 1  # the record is whole, only its newline is missing
        assert _values(path) == ([0.0, 1.0, 2.0] if kept else [0.0, 1.0]) + [99.0], cut
        assert len(notes) == 1 and notes[0].startswith("repaired")
        torn = list(path.parent.glob("study.journal.torn-*"))
        assert len(torn) == (0 if kept else 1)
        if torn:
            assert data[:cut].endswith(torn[0].read_bytes())  # what was cut is kept
        assert repair_journal(path) is None  # sound now


def test_a_journal_glued_by_an_earlier_version_is_mended(tmp_path):
    path = tmp_path / "study.journal"
    _journal_with_trials(path, 3)
    lines = path.read_bytes().split(b"\n")
    # what appending after a torn line produced, and then one more record: a fragment with a
    # whole record glued onto it, no longer the last line, so Optuna can't read the file
    glued = b"\n".join([*lines[:-3], lines[-3][:-15] + lines[-3], lines[-2], b""])
    path.write_bytes(glued)
    with pytest.raises(ValueError):
        JournalStorage(JournalFileBackend(str(path)))
    notes: list[str] = []
    study = open_study(str(path), "s", OBJECTIVE, {}, notify=notes.append)
    assert [t.value for t in study.get_trials(deepcopy=False)] == [0.0, 1.0, 2.0]
    assert len(notes) == 1


def test_a_search_resumes_twice_from_a_truncated_journal(run_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    from bitscout.study.store import liveness

    monkeypatch.setattr(liveness, "_TOKEN", "resumed")  # as a new process: the old one is dead
    out = copy_run(run_dir, tmp_path / "run")
    journal = out / "study.journal"
    journal.write_bytes(journal.read_bytes()[:-40])
    for attempt in range(2):
        args = ["search", str(run_dir["config"]), "--out", str(out), "--trials", "4"]
        outcome = run_cli(args, capsys)
        assert outcome.rc == 0, outcome.err + (outcome.escaped or "")
        repaired = [line for line in outcome.out.splitlines() if line.startswith("repaired")]
        assert len(repaired) == (1 if attempt == 0 else 0)
    study = optuna.load_study(study_name="bitscout", storage=_journal(journal))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4


def test_a_search_into_a_full_disk_fails_in_one_line_and_resumes(run_dir, tmp_path):  # noqa: F811
    """A real 64 KB tmpfs (needs root; skipped otherwise): the search dies with ENOSPC in one
    line; after the disk grows, the same command resumes from the repaired journal."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_tmpfs(disk):
        pytest.skip("mounting a tmpfs needs root")
    try:
        doc = edit(base_doc(), "search.strategy.setup.n_trials", 4)
        config = write_config(tmp_path / "c.toml", doc)
        argv = [sys.executable, "-m", "bitscout", "search", str(config), "--out", str(disk / "r"),
                "--load", str(run_dir["ckpt"]), "--strategy", "bruteforce"]  # fmt: skip
        first = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert first.returncode == 1, first.stderr
        assert first.stderr.count("\n") == 1 and "ENOSPC" in first.stderr
        assert "Traceback" not in first.stderr
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        study = optuna.load_study(
            study_name="bitscout", storage=_journal(disk / "r" / "study.journal")
        )
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_journal_write_cut_by_a_full_disk_is_one_line_and_resumable(
    run_dir,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    """The same without root: the journal's 4th write stores half its record, then ENOSPC."""
    out = tmp_path / "run"
    append = WriteBehindFile.append_logs
    calls = {"n": 0}

    def full_disk(self, logs):
        calls["n"] += 1
        if calls["n"] == 4:
            text = json.dumps(logs[0]).encode()
            with open(self._file_path, "ab") as f:
                f.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", self._file_path)
        return append(self, logs)

    monkeypatch.setattr(WriteBehindFile, "append_logs", full_disk)
    args = ["search", str(run_dir["config"]), "--out", str(out), "--load", str(run_dir["ckpt"])]
    outcome = run_cli([*args, "--trials", "4"], capsys)
    assert outcome.rc == 1 and outcome.escaped is None
    assert len(outcome.err.splitlines()) == 1 and "ENOSPC" in outcome.err
    monkeypatch.setattr(WriteBehindFile, "append_logs", append)
    outcome = run_cli([*args, "--trials", "4"], capsys)
    assert outcome.rc == 0, outcome.err
    assert "repaired" in outcome.out
    assert not list(out.glob(".*.tmp"))


# --- 2. a resume on other data ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("seed", 2, "seed = 1"),
        ("dataset_options.num_samples", 400, "dataset_options"),
        ("search.strategy.setup.num_samples", 30, "num_samples = None"),
    ],
)
def test_a_resume_on_other_validation_data_is_refused(run_dir, tmp_path, capsys, key, value, named):  # noqa: F811
    out = copy_run(run_dir, tmp_path / "run")
    config = write_config(tmp_path / "other.toml", edit(base_doc(), key, value))
    before = (out / "study.journal").read_bytes()
    outcome = run_cli(["search", str(config), "--out", str(out), "--trials", "4"], capsys)
    assert error_problems(outcome) == []
    assert "--study" in outcome.err and named in outcome.err, outcome.err
    assert (out / "study.journal").read_bytes() == before


def test_the_data_file_decides_not_its_path(tmp_path, capsys):
    """The same rows under another path resume; other rows under the same path are refused."""
    from bitscout.zoo.jsc import FEATURES as JSC_FEATURES

    rows = "\n".join(",".join(["0.5"] * 16 + ["g"]) for _ in range(2))
    table = [",".join([*JSC_FEATURES, "class"])]
    for i in range(200):
        table.append(",".join([str((i * 7 + k) % 11 / 3.0) for k in range(16)] + ["gqtwz"[i % 5]]))
    first = tmp_path / "a.csv"
    first.write_text("\n".join(table) + "\n")
    doc = edit(base_doc(), "dataset", "jsc")
    doc.pop("dataset_options")
    config = write_config(tmp_path / "jsc.toml", edit(doc, "dataset_path", str(first)))
    out = tmp_path / "run"
    assert run_cli(["search", str(config), "--out", str(out)], capsys).rc == 0
    moved = tmp_path / "b.csv"
    shutil.copy(first, moved)
    config = write_config(tmp_path / "jsc.toml", edit(doc, "dataset_path", str(moved)))
    outcome = run_cli(["search", str(config), "--out", str(out), "--trials", "3"], capsys)
    assert outcome.rc == 0, outcome.err
    first.write_text("\n".join(table[:-2] + [rows]) + "\n")  # as many rows, two of them new
    config = write_config(tmp_path / "jsc.toml", edit(doc, "dataset_path", str(first)))
    outcome = run_cli(["search", str(config), "--out", str(out), "--trials", "4"], capsys)
    assert error_problems(outcome) == []
    assert "did the data file change" in outcome.err


def test_two_searches_racing_on_an_empty_store_cannot_both_pass(tmp_path, monkeypatch):
    """Both look before either writes (forced here); the first proposal wins for both."""
    path = str(tmp_path / "race.journal")
    one, two = open_storage(path), open_storage(path)
    for storage in (one, two):
        real = storage.get_all_trials
        seen = {"calls": 0}

        def blind(study_id, *args, _real=real, _seen=seen, **kwargs):
            _seen["calls"] += 1
            return [] if _seen["calls"] == 1 else _real(study_id, *args, **kwargs)

        monkeypatch.setattr(storage, "get_all_trials", blind)
    assert settle_fingerprint(one, "s", {"model": "a"}) == {"model": "a"}
    assert settle_fingerprint(two, "s", {"model": "b"}) == {"model": "a"}


# --- 3. n_jobs ----------------------------------------------------------------------------


def _setup(**values: object) -> dict:
    doc = base_doc()
    doc["search"]["strategy"]["setup"].update(values)
    return doc["search"]


def test_n_jobs_is_bounded_by_the_cpu_count_unless_raised_explicitly():
    limit = JOBS_PER_CPU * cpu_count()
    assert parse_settings(_setup(n_jobs=limit), 0).n_jobs == limit
    with pytest.raises(Exception, match=r"n_jobs: must be at most .*n_jobs_limit"):
        parse_settings(_setup(n_jobs=limit + 1), 0)
    assert parse_settings(_setup(n_jobs=limit + 1, n_jobs_limit=limit + 1), 0).n_jobs == limit + 1
    with pytest.raises(Exception, match=r"at most n_jobs_limit = 3"):
        parse_settings(_setup(n_jobs=4, n_jobs_limit=3), 0)


def test_n_jobs_of_100000_spawns_nothing(run_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("spawned a worker"))
    config = write_config(tmp_path / "c.toml", edit(base_doc(), "search.strategy.setup.n_jobs",
                                                     100000))  # fmt: skip
    outcome = run_cli(["search", str(config), "--out", str(tmp_path / "o")], capsys)
    assert error_problems(outcome) == [] and "n_jobs" in outcome.err
    assert not (tmp_path / "o").exists()
