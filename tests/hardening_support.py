"""What the hostile-case tests (tests/test_hardening*.py) share: one finished search of the
base config per test module, a copy of its run directory, a journal store opened the way
bitscout opens it, and whether a small tmpfs can be mounted to fill a disk."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_support import finished_base_run
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return finished_base_run(tmp_path_factory.mktemp("hardening"))


def copy_run(run_dir: dict[str, Path], dest: Path) -> Path:
    shutil.copytree(run_dir["run"], dest)
    return dest


def _journal(path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


def _can_mount_tmpfs(where: Path, size: str = "64k") -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    argv = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    return subprocess.run(argv, capture_output=True).returncode == 0
