"""Hostile cases that used to lose or mix data: a torn journal, a resume on other data,
unbounded n_jobs, leaked passwords, tracebacks where one line belongs (issue 10)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
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
from optuna.trial import TrialState

from bitscout.objective import MetricSpec, Objective
from bitscout.study.settings import JOBS_PER_CPU, cpu_count, parse_settings
from bitscout.study.store.deferred import WriteBehindFile
from bitscout.study.store.optuna_store import repair_journal
from bitscout.study.store.storage import (
    mask_password,
    open_storage,
    open_study,
    settle_fingerprint,
)

OBJECTIVE = Objective((MetricSpec("accuracy", 1.0, "maximize"),))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return finished_base_run(tmp_path_factory.mktemp("hardening"))


def copy_run(run_dir: dict[str, Path], dest: Path) -> Path:
    shutil.copytree(run_dir["run"], dest)
    return dest


# --- 1. a torn journal --------------------------------------------------------------------


def _journal_with_trials(path: Path, n: int) -> None:
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(value=float(i), user_attrs={"i": i}))


def _journal(path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


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


def test_a_search_resumes_twice_from_a_truncated_journal(run_dir, tmp_path, capsys, monkeypatch):
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


def _can_mount_tmpfs(where: Path, size: str = "64k") -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    argv = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    return subprocess.run(argv, capture_output=True).returncode == 0


def test_a_search_into_a_full_disk_fails_in_one_line_and_resumes(run_dir, tmp_path):
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
    run_dir, tmp_path, capsys, monkeypatch
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
def test_a_resume_on_other_validation_data_is_refused(run_dir, tmp_path, capsys, key, value, named):
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


def test_n_jobs_of_100000_spawns_nothing(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("spawned a worker"))
    config = write_config(tmp_path / "c.toml", edit(base_doc(), "search.strategy.setup.n_jobs",
                                                     100000))  # fmt: skip
    outcome = run_cli(["search", str(config), "--out", str(tmp_path / "o")], capsys)
    assert error_problems(outcome) == [] and "n_jobs" in outcome.err
    assert not (tmp_path / "o").exists()


# --- 4. passwords -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://user:s3c/ret@host/db", "postgresql://user:***@host/db"),
        ("postgresql://:s3cret@host/db", "postgresql://:***@host/db"),
        ("postgresql://bob:s3cr@t@db:5432/x", "postgresql://bob:***@db:5432/x"),
        (
            "postgresql+psycopg://u:p%2Fw@h:1/d?sslmode=require",
            "postgresql+psycopg://u:***@h:1/d?sslmode=require",
        ),
        ("postgresql://host/db", "postgresql://host/db"),
        ("runs/a/study.journal", "runs/a/study.journal"),
    ],
)
def test_every_password_form_is_masked(url, masked):
    assert mask_password(url) == masked


@pytest.mark.parametrize("secret", ["s3c/ret", "s3cret"])
def test_an_unreachable_store_never_prints_its_password(run_dir, tmp_path, capsys, secret):
    user = "user" if "/" in secret else ""
    url = f"postgresql+psycopg://{user}:{secret}@127.0.0.1:1/db?connect_timeout=2"
    args = ["search", str(run_dir["config"]), "--out", str(tmp_path / "o"), "--storage", url]
    outcome = run_cli(args, capsys)
    assert error_problems(outcome) == []
    assert secret not in outcome.err + outcome.out and "***" in outcome.err


def test_no_worker_shows_the_storage_in_its_command_line(run_dir, tmp_path):
    """BITSCOUT_STORAGE names the store; n_jobs = 2 forks a worker: neither process's argv
    (what `ps` shows every local user) holds it, and both workers evaluate."""
    doc = edit(base_doc(), "search.strategy.setup.n_jobs", 2)
    doc = edit(doc, "search.strategy.setup.n_trials", 6)
    config = write_config(tmp_path / "jobs.toml", doc)
    store = tmp_path / "s3cret-store.journal"
    driver = Path(__file__).with_name("worker_driver.py")
    argv = [sys.executable, str(driver), "search", str(config), "--out", str(tmp_path / "o"),
            "--load", str(run_dir["ckpt"]), "--sampler", "random"]  # fmt: skip
    env = {**os.environ, "BITSCOUT_STORAGE": str(store), "DRIVER_SLOW_S": "0.3"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cmdlines: list[bytes] = []
    try:
        while proc.poll() is None:
            pids = [proc.pid, *_children(proc.pid)]
            cmdlines += [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids
                         if Path(f"/proc/{pid}/cmdline").exists()]  # fmt: skip
            if len(pids) > 1:
                break
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert cmdlines and not any(b"s3cret" in c for c in cmdlines)
    study = optuna.load_study(study_name="bitscout", storage=_journal(store))
    pids = {t.user_attrs["worker"].split(":")[1] for t in study.trials if t.state.is_finished()}
    assert len(pids) == 2


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_the_dashboard_line_masks_the_password(monkeypatch, capsys):
    import types

    from rich.console import Console

    from bitscout.cli import dashboard

    fake = types.SimpleNamespace(run_server=lambda storage, host, port: None)
    monkeypatch.setattr(dashboard.importlib, "import_module", lambda name: fake)
    monkeypatch.setattr(dashboard, "connect", lambda url, notify=None: None)
    dashboard.serve_dashboard("postgresql://:s3cret@h/db", "127.0.0.1", 1, Console())
    assert "s3cret" not in capsys.readouterr().out


# --- 5. one line, not a traceback ---------------------------------------------------------


def test_out_naming_an_existing_file(run_dir, tmp_path, capsys):
    file = tmp_path / "a_file"
    file.write_text("keep me")
    for command in (["search", str(run_dir["config"])], ["train", str(run_dir["config"])]):
        outcome = run_cli([*command, "--out", str(file)], capsys)
        assert error_problems(outcome) == [] and "--out" in outcome.err
    assert file.read_text() == "keep me"


def test_a_read_only_output_directory(run_dir, tmp_path, capsys):
    """A real read-only filesystem (a tmpfs remounted ro; needs root, skipped otherwise)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _can_mount_tmpfs(disk, "64m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        out = copy_run(run_dir, disk / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        before = sorted(p.name for p in out.rglob("*"))
        for argv in (["report", str(out)], ["search", str(run_dir["config"]), "--out", str(out)]):
            outcome = run_cli(argv, capsys)
            assert outcome.rc == 1 and outcome.escaped is None, outcome.escaped
            assert len(outcome.err.splitlines()) == 1 and "EROFS" in outcome.err
        assert sorted(p.name for p in out.rglob("*")) == before
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_failed_write_leaves_no_temporary_file(run_dir, tmp_path, capsys, monkeypatch):
    """The same without root: every output file's final rename fails as on a read-only disk."""
    out = copy_run(run_dir, tmp_path / "run")
    real = Path.replace

    def refuse(self, target):
        if str(self).startswith(str(out)):
            raise OSError(errno.EROFS, "Read-only file system", str(target))
        return real(self, target)

    monkeypatch.setattr(Path, "replace", refuse)
    outcome = run_cli(["report", str(out)], capsys)
    assert outcome.rc == 1 and outcome.escaped is None, outcome.escaped
    assert len(outcome.err.splitlines()) == 1 and "EROFS" in outcome.err and str(out) in outcome.err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_a_full_disk_while_plotting_leaves_no_partial_files(run_dir, tmp_path, capsys, monkeypatch):
    from bitscout.results import plots

    out = copy_run(run_dir, tmp_path / "run")
    shutil.rmtree(out / "plots")

    def full(fname, *args, **kwargs):  # the PNG's writer, in its thread
        Path(fname).write_bytes(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(fname))

    monkeypatch.setattr(plots, "imsave", full)
    outcome = run_cli(["report", str(out)], capsys)
    assert outcome.rc == 1 and len(outcome.err.splitlines()) == 1 and "ENOSPC" in outcome.err
    assert not list((out / "plots").glob("*"))  # neither a partial PNG nor a temporary file


@pytest.mark.parametrize(
    "content",
    ["a = " + "[" * 5000 + "]" * 5000 + "\n", "x = {" * 3000 + "}" * 3000 + "\n"],
    ids=["arrays", "inline-tables"],
)
def test_a_deeply_nested_config(tmp_path, capsys, content):
    config = tmp_path / "deep.toml"
    config.write_text(content)
    outcome = run_cli(["space", str(config)], capsys)
    assert error_problems(outcome) == [] and str(config) in outcome.err


def test_a_model_too_large_to_allocate(tmp_path, capsys):
    doc = edit(edit(base_doc(), "model", "mlp"), "model_options", {"hidden": [10**10]})
    config = write_config(tmp_path / "big.toml", doc)
    outcome = run_cli(["space", str(config)], capsys)
    assert error_problems(outcome) == [] and "model_options" in outcome.err


def test_a_config_that_never_ends(capsys):
    outcome = run_cli(["space", "/dev/zero"], capsys)
    assert error_problems(outcome) == [] and "larger than" in outcome.err


# --- 6. counting with several workers -----------------------------------------------------

# lives in test_reliability.py, beside the other many-worker tests

# --- 7. smaller ---------------------------------------------------------------------------


def test_tpe_stops_once_every_candidate_is_known(run_dir, tmp_path, capsys):
    args = ["search", str(run_dir["config"]), "--out", str(tmp_path / "o"),
            "--load", str(run_dir["ckpt"]), "--sampler", "tpe", "--trials", "100000"]  # fmt: skip
    outcome = run_cli(args, capsys)
    assert outcome.rc == 0, outcome.err
    assert "all 4 candidates of the space are evaluated" in outcome.out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["unique_configs"] == 4 and summary["complete"] < 1000


def test_an_empty_study_name_is_refused(run_dir, tmp_path, capsys):
    args = ["search", str(run_dir["config"]), "--out", str(tmp_path / "o"), "--study", ""]
    outcome = run_cli(args, capsys)
    assert error_problems(outcome) == [] and "--study" in outcome.err


def _jsc_csv(path: Path, labels: str, value: str = "0.5") -> Path:
    from bitscout.zoo.jsc import FEATURES as JSC_FEATURES

    lines = [",".join([*JSC_FEATURES, "class"])]
    for i in range(100):
        lines.append(",".join([str(i % 7 / 7)] * 15 + [value] + [labels[i % len(labels)]]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_single_class_dataset_is_warned_about(tmp_path, capsys):
    doc = edit(
        edit(base_doc(), "dataset", "jsc"), "dataset_path", str(_jsc_csv(tmp_path / "g.csv", "g"))
    )
    doc.pop("dataset_options")
    config = write_config(tmp_path / "one.toml", doc)
    outcome = run_cli(["train", str(config), "--out", str(tmp_path / "t")], capsys)
    assert outcome.rc == 0
    assert "warning: the training split holds a single class (g)" in outcome.out


def test_infinity_in_a_csv_is_not_called_missing(tmp_path, capsys):
    path = _jsc_csv(tmp_path / "inf.csv", "gqtwz", value="inf")
    doc = edit(edit(base_doc(), "dataset", "jsc"), "dataset_path", str(path))
    doc.pop("dataset_options")
    outcome = run_cli(["space", str(write_config(tmp_path / "inf.toml", doc))], capsys)
    assert error_problems(outcome) == []
    assert "infinite values" in outcome.err and "missing" not in outcome.err


def test_a_plain_pickle_checkpoint_is_refused_in_exactly_one_line(run_dir, tmp_path):
    plain = tmp_path / "plain.pt"
    with plain.open("wb") as f:
        pickle.dump(torch.load(run_dir["ckpt"], weights_only=True), f)
    argv = [sys.executable, "-m", "bitscout", "quantize", str(run_dir["config"]), "--load",
            str(plain), "--quant", str(run_dir["run"] / "best.toml")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("bitscout: error: ")
