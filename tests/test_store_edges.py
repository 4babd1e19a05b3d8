"""The store at its edges (issue 20, items 5, 11, 13, 14, 15 and the dashboard of 16): a chunk
token cut before its state, a --storage file that is not a journal, a raw '@' in a password,
a full disk under a sampler, two greedy walkers on one study, a bad URL in the dashboard."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import optuna
import pytest
from cli_support import (
    base_doc,
    edit,
    error_problems,
    finished_base_run,
    run_cli,
    write_config,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from test_store import _ok, store  # noqa: F401

from bitscout.study.chunks import token_attrs
from bitscout.study.store.base import WORKER
from bitscout.study.store.deferred import WriteBehindFile

DRIVER = Path(__file__).with_name("worker_driver.py")
STATE_OP = 6  # Optuna's journal op code for a trial's state and values


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return finished_base_run(tmp_path_factory.mktemp("edges"))


def _search(run_dir: dict[str, Path], out: Path, *extra: str) -> list[str]:
    args = ["search", str(run_dir["config"]), "--out", str(out), "--load", str(run_dir["ckpt"])]
    return [*args, *extra]


# --- 5. a chunk token interrupted after its rows, before its state ---------------------------


def test_a_token_interrupted_after_its_rows_is_not_a_chunk(store):  # noqa: F811
    """The token's rows and its own result are written, its state is not: the next worker
    fails it as interrupted, and its rows must not count (its chunk is evaluated again)."""
    configs = [store.space.config(i) for i in range(3)]
    ref = store.claim(configs[-1], chunk=0, quota=3)
    rows = token_attrs([0, 1, 2], [_ok(0.1), _ok(0.2), _ok(0.3)], ["accuracy"])
    for key, value in rows.items():
        store.set_attr(ref, key, value)
    store.set_attr(ref, WORKER, f"{os.uname().nodename}:999999999:gone")  # died right there
    assert [t.ref for t in store.fail_stale()] == [ref]
    assert store.chunks() == []
    done = store.claim(configs[-1], chunk=0, quota=3)  # the chunk's next token completes
    store.finish(done, _ok(0.3), rows)
    assert [c.indices.tolist() for c in store.chunks()] == [[0, 1, 2]]


def test_a_chunked_search_cut_before_a_tokens_state_counts_each_candidate_once(
    run_dir, tmp_path, capsys
):
    """The journal of a finished chunked brute force, cut just before its last token's state
    record (as a SIGKILL there leaves it), then resumed: 4 rows for 4 candidates, not 4 plus
    the cut token's."""
    doc = edit(base_doc(), "search.strategy.name", "bruteforce")
    doc = edit(doc, "search.strategy.setup.n_trials", 4)
    config = write_config(
        tmp_path / "chunked.toml", edit(doc, "search.strategy.setup.chunked", True)
    )
    out = tmp_path / "run"
    args = ["search", str(config), "--out", str(out), "--load", str(run_dir["ckpt"])]
    assert run_cli(args, capsys).rc == 0
    journal = out / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    last_state = max(i for i, line in enumerate(lines) if json.loads(line)["op_code"] == STATE_OP)
    journal.write_bytes(b"".join(lines[:last_state]))
    study = optuna.load_study(study_name="bitscout", storage=_journal(journal))
    (token,) = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert "rows" in token.user_attrs  # its rows were written, its state was not
    _kill(journal, token.number)
    outcome = run_cli(args, capsys)
    assert outcome.rc == 0, outcome.err
    rows = (out / "trials.csv").read_text().splitlines()[1:]
    assert len(rows) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] == 4


def _journal(path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


def _kill(journal: Path, number: int) -> None:
    """Mark trial `number`'s worker as a process that no longer exists."""
    storage = _journal(journal)
    study = optuna.load_study(study_name="bitscout", storage=storage)
    trial_id = study.get_trials()[number]._trial_id
    storage.set_trial_user_attr(trial_id, WORKER, f"{os.uname().nodename}:999999999:gone")


# --- 11. --storage naming a file that is not a journal ------------------------------------------


@pytest.mark.parametrize("content", [b"[search]\nx = 1\n", b"PK\x03\x04 a checkpoint", b"\n"])
def test_a_storage_file_that_is_not_a_journal_is_refused_untouched(
    run_dir, tmp_path, capsys, content
):
    victim = tmp_path / "precious.toml"
    victim.write_bytes(content)
    outcome = run_cli(_search(run_dir, tmp_path / "o", "--storage", str(victim)), capsys)
    assert error_problems(outcome) == []
    assert "not an Optuna journal" in outcome.err and str(victim) in outcome.err
    assert victim.read_bytes() == content
    assert not list(tmp_path.glob("precious.toml*[!l]"))  # no .torn- file, no lock left


def test_an_sqlite_file_given_as_a_path_is_refused_with_the_url_to_use(run_dir, tmp_path, capsys):
    db = tmp_path / "study.db"
    optuna.create_study(storage=f"sqlite:///{db}", study_name="x")
    before = db.read_bytes()
    outcome = run_cli(_search(run_dir, tmp_path / "o", "--storage", str(db)), capsys)
    assert error_problems(outcome) == [] and f"sqlite:///{db}" in outcome.err
    assert db.read_bytes() == before


def test_a_journal_a_search_wrote_and_a_new_file_are_still_accepted(run_dir, tmp_path, capsys):
    journal = tmp_path / "shared.journal"
    for _ in range(2):  # created, then resumed
        outcome = run_cli(_search(run_dir, tmp_path / "o", "--storage", str(journal)), capsys)
        assert outcome.rc == 0, outcome.err
    empty = tmp_path / "empty.journal"
    empty.touch()
    outcome = run_cli(_search(run_dir, tmp_path / "o2", "--storage", str(empty)), capsys)
    assert outcome.rc == 0, outcome.err


# --- 13. a raw '@' in a password ----------------------------------------------------------------

RAW_AT = "postgresql+psycopg://user:pa55@w0rd@127.0.0.1:1/db?connect_timeout=2"


def test_scrub_removes_every_piece_of_the_credentials():
    from bitscout.study.store.storage import scrub

    text = "failed to resolve host 'w0rd@127.0.0.1': postgresql://user:pa55@w0rd@h/db and pa55@w0rd"
    got = scrub(text, RAW_AT)
    assert "w0rd" not in got and "pa55" not in got, got
    assert "127.0.0.1" in got and "://***@h/db" in got
    assert scrub("mysql://a:b@c@d/e failed", None) == "mysql://***@d/e failed"
    assert scrub("no url here user@host", None) == "no url here user@host"


def test_a_raw_at_in_a_password_is_never_printed_by_search(run_dir, tmp_path, capsys):
    outcome = run_cli(_search(run_dir, tmp_path / "o", "--storage", RAW_AT), capsys)
    assert error_problems(outcome) == []
    assert "w0rd" not in outcome.err + outcome.out and "pa55" not in outcome.err + outcome.out


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []
    fake = types.ModuleType("optuna_dashboard")
    fake.run_server = lambda storage, host, port: calls.append((storage, host, port))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "optuna_dashboard", fake)
    return calls


# --- 16. the dashboard with a bad storage URL ---------------------------------------------------


@pytest.mark.parametrize(
    "url", [RAW_AT, "nosuchdb://u:s3cret@h/db", "postgresql+psycopg://u:s3cret@127.0.0.1:1/d"]
)
def test_the_dashboard_on_a_bad_storage_url_is_one_line(tmp_path, served, capsys, url):
    outcome = run_cli(["dashboard", str(tmp_path), "--storage", url], capsys)
    assert error_problems(outcome) == [] and served == []
    assert not any(s in outcome.err + outcome.out for s in ("w0rd", "pa55", "s3cret"))


def test_the_dashboard_refuses_a_file_that_is_not_a_journal(tmp_path, served, capsys):
    victim = tmp_path / "config.toml"
    victim.write_text("[search]\n")
    outcome = run_cli(["dashboard", str(tmp_path), "--storage", str(victim)], capsys)
    assert error_problems(outcome) == [] and "not an Optuna journal" in outcome.err
    assert victim.read_text() == "[search]\n" and served == []


# --- 14. a full disk while an Optuna sampler writes the journal --------------------------------


def test_a_full_disk_under_a_sampler_is_one_line_naming_the_journal(
    run_dir, tmp_path, capsys, monkeypatch
):
    """A write through an open file names no file (as a real ENOSPC): the sampler's tell fails
    and Optuna ends in `AssertionError: Should not reach`. One line, naming the journal."""
    append = WriteBehindFile.append_logs

    def full_disk(self, logs):
        if any(log["op_code"] == STATE_OP for log in logs):
            raise OSError(errno.ENOSPC, "No space left on device")
        return append(self, logs)

    monkeypatch.setattr(WriteBehindFile, "append_logs", full_disk)
    out = tmp_path / "run"
    outcome = run_cli(_search(run_dir, out), capsys)
    assert outcome.rc == 1 and outcome.escaped is None, outcome.escaped
    assert len(outcome.err.splitlines()) == 1, outcome.err
    assert "ENOSPC" in outcome.err and str(out / "study.journal") in outcome.err
    assert "Should not reach" not in outcome.err + outcome.out


# --- 15. two greedy workers on one study --------------------------------------------------------


def test_a_second_greedy_walker_on_a_live_walk_is_refused_naming_it(run_dir, tmp_path, capsys):
    """A greedy walk runs in another process: a second walker on its study is refused in one
    line naming the live one and adds no trial; the first walks on alone, no candidate twice."""
    journal = tmp_path / "shared.journal"
    doc = edit(base_doc(), "search.strategy.name", "greedy")
    config = write_config(tmp_path / "greedy.toml", edit(doc, "search.strategy.setup.n_trials", 4))
    args = ["--load", str(run_dir["ckpt"]), "--storage", str(journal)]
    first = subprocess.Popen(
        [sys.executable, str(DRIVER), "search", str(config), "--out", str(tmp_path / "a"), *args],
        env={**os.environ, "DRIVER_SLOW_S": "1.5"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for_walker(journal, first)
        outcome = run_cli(["search", str(config), "--out", str(tmp_path / "b"), *args], capsys)
    finally:
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert error_problems(outcome) == [] and f":{first.pid}:" in outcome.err, outcome.err
    study = optuna.load_study(study_name="bitscout", storage=_journal(journal))
    params = [tuple(sorted(t.params.items())) for t in study.get_trials()]
    assert len(params) == 4 == len(set(params))
    assert {t.user_attrs[WORKER].split(":")[1] for t in study.get_trials()} == {str(first.pid)}


def _wait_for_walker(journal: Path, proc: subprocess.Popen) -> None:
    """Until the walk in `proc` holds its lease and has scored a candidate."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists():
            with contextlib.suppress(Exception):
                study = optuna.load_study(study_name="bitscout", storage=_journal(journal))
                if study.get_trials():
                    return
        time.sleep(0.2)
    raise AssertionError(f"the first walker did not start: {proc.poll()}")


def test_a_store_driver_error_mid_search_is_one_line_without_the_password(store):  # noqa: F811
    """An RDB write failing mid-search (Optuna's StorageInternalError, the driver's error as
    its cause, maybe behind Optuna's `Should not reach`): SearchFailed, scrubbed."""
    from optuna.exceptions import StorageInternalError

    from bitscout.errors import SearchFailed
    from bitscout.study.store.optuna_store import OptunaStore

    on_rdb = OptunaStore(store.study, store.space, RAW_AT)
    for behind_assertion in (False, True):
        with pytest.raises(SearchFailed) as got, on_rdb.writing():
            try:
                try:
                    raise RuntimeError("failed to resolve host 'w0rd@127.0.0.1'")
                except RuntimeError as driver:
                    raise StorageInternalError(
                        "An exception is raised during the commit"
                    ) from driver
            except StorageInternalError:
                if not behind_assertion:
                    raise
                raise AssertionError("Should not reach.")  # noqa: B904 - as Optuna's finally does
        text = str(got.value)
        assert "w0rd" not in text and "pa55" not in text and "127.0.0.1" in text, text
        assert "postgresql+psycopg://user:***@" in text


@pytest.mark.parametrize(("code", "name"), [(errno.ENOSPC, "ENOSPC"), (errno.EROFS, "EROFS")])
def test_a_journal_that_cannot_be_written_when_opened_is_the_machines_error(
    run_dir, tmp_path, capsys, monkeypatch, code, name
):
    """The journal's first write fails (no file named, as a write through a handle): exit 1,
    one line naming the journal, not a refused --storage."""

    def failing(self, logs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(WriteBehindFile, "append_logs", failing)
    out = tmp_path / "run"
    outcome = run_cli(_search(run_dir, out), capsys)
    assert outcome.rc == 1 and outcome.escaped is None, outcome.err
    assert len(outcome.err.splitlines()) == 1 and name in outcome.err
    assert f"cannot use {out / 'study.journal'}:" in outcome.err


def test_the_dashboard_does_not_create_a_journal_it_was_pointed_at(tmp_path, served, capsys):
    missing = tmp_path / "typo.journal"
    outcome = run_cli(["dashboard", str(tmp_path), "--storage", str(missing)], capsys)
    assert error_problems(outcome) == [] and "no journal file here" in outcome.err
    assert not missing.exists() and served == []


def test_a_workers_last_line_is_scrubbed(capsys):
    from bitscout.errors import ConfigError
    from bitscout.study.parallel import _child

    def work(index: int) -> None:
        raise ConfigError("--storage", f"a driver's text: {RAW_AT}")

    with pytest.raises(SystemExit):
        _child(work, 1)
    err = capsys.readouterr().err
    assert err.startswith("bitscout: worker 1: error:") and "127.0.0.1" in err
    assert "pa55" not in err and "w0rd" not in err, err
