"""`n_jobs > 1`: more worker processes on the same study (processes, not threads: PyTorch
and Python's GIL make threads share one core's worth of evaluation)."""

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from bitscout.errors import ConfigError

# The storage URL reaches extra workers through their environment, which only their user can
# read, not through argv, which any local user sees in `ps`: it may hold a password.
STORAGE_ENV = "BITSCOUT_STORAGE"


def worker_argv(
    config: Path, out: Path, checkpoint: Path, study: str, flags: Sequence[str]
) -> list[str]:
    """The command line of one extra worker: the same search, the same checkpoint and study
    (and the same storage, from `spawn`'s environment)."""
    return [
        sys.executable, "-m", "bitscout", "search", str(config), "--out", str(out),
        "--load", str(checkpoint), "--study", study, "--child", *flags,
    ]  # fmt: skip


def check_shareable(storage: str, n_jobs: int) -> None:
    if n_jobs > 1 and storage.startswith("sqlite:"):
        raise ConfigError(
            "search.strategy.setup.n_jobs",
            "needs a store several processes can write: a journal file (the default) or "
            "postgresql://, not sqlite",
            n_jobs,
        )


def spawn(argvs: Sequence[list[str]], storage: str) -> list[subprocess.Popen]:
    """Start the extra workers on `storage`; their own output is dropped (the parent reports
    progress)."""
    env = {**os.environ, STORAGE_ENV: storage}
    return [
        subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        for argv in argvs
    ]


def join(procs: Sequence[subprocess.Popen], console: Console) -> None:
    """Wait for the extra workers; on an interruption, stop them too (their running trials
    are recorded as interrupted and run again on resume)."""
    try:
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode not in (0, 130):
                last = (err or "").strip().splitlines()[-1:] or ["no message"]
                console.print(f"a worker process ended with status {proc.returncode}: {last[0]}")
    except BaseException:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        raise
