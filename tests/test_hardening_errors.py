"""Hostile cases that used to leak or crash (issue 10): passwords masked wherever a store is
named, one line instead of a traceback for bad outputs, configs, models and data files, and
smaller cases (TPE stopping once every candidate is known, an empty study name). Split from
tests/test_hardening.py."""

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
    run_cli,
    write_config,
)
from hardening_support import (
    _can_mount_tmpfs,
    _journal,
    copy_run,
    run_dir,  # noqa: F401 - the fixture
)

from bitscout.study.store.storage import (
    mask_password,
)

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
def test_an_unreachable_store_never_prints_its_password(run_dir, tmp_path, capsys, secret):  # noqa: F811
    user = "user" if "/" in secret else ""
    url = f"postgresql+psycopg://{user}:{secret}@127.0.0.1:1/db?connect_timeout=2"
    args = ["search", str(run_dir["config"]), "--out", str(tmp_path / "o"), "--storage", url]
    outcome = run_cli(args, capsys)
    assert error_problems(outcome) == []
    assert secret not in outcome.err + outcome.out and "***" in outcome.err


def test_no_worker_shows_the_storage_in_its_command_line(run_dir, tmp_path):  # noqa: F811
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


def test_out_naming_an_existing_file(run_dir, tmp_path, capsys):  # noqa: F811
    file = tmp_path / "a_file"
    file.write_text("keep me")
    for command in (["search", str(run_dir["config"])], ["train", str(run_dir["config"])]):
        outcome = run_cli([*command, "--out", str(file)], capsys)
        assert error_problems(outcome) == [] and "--out" in outcome.err
    assert file.read_text() == "keep me"


def test_a_read_only_output_directory(run_dir, tmp_path, capsys):  # noqa: F811
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


def test_a_failed_write_leaves_no_temporary_file(run_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
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


def test_a_full_disk_while_plotting_leaves_no_partial_files(run_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
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


def test_tpe_stops_once_every_candidate_is_known(run_dir, tmp_path, capsys):  # noqa: F811
    args = ["search", str(run_dir["config"]), "--out", str(tmp_path / "o"),
            "--load", str(run_dir["ckpt"]), "--sampler", "tpe", "--trials", "100000"]  # fmt: skip
    outcome = run_cli(args, capsys)
    assert outcome.rc == 0, outcome.err
    assert "all 4 candidates of the space are evaluated" in outcome.out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["unique_configs"] == 4 and summary["complete"] < 1000


def test_an_empty_study_name_is_refused(run_dir, tmp_path, capsys):  # noqa: F811
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


def test_a_plain_pickle_checkpoint_is_refused_in_exactly_one_line(run_dir, tmp_path):  # noqa: F811
    plain = tmp_path / "plain.pt"
    with plain.open("wb") as f:
        pickle.dump(torch.load(run_dir["ckpt"], weights_only=True), f)
    argv = [sys.executable, "-m", "bitscout", "quantize", str(run_dir["config"]), "--load",
            str(plain), "--quant", str(run_dir["run"] / "best.toml")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("bitscout: error: ")
