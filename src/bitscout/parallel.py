"""`n_jobs > 1`: more worker processes on the same study (processes, not threads: PyTorch
and Python's GIL make threads share one core's worth of evaluation)."""

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from bitscout.errors import ConfigError


def worker_argv(
    config: Path, out: Path, checkpoint: Path, storage: str, study: str, flags: Sequence[str]
) -> list[str]:
    """The command line of one extra worker: the same search, the same checkpoint and study."""
    return [
        sys.executable, "-m", "bitscout", "search", str(config), "--out", str(out),
        "--load", str(checkpoint), "--storage", storage, "--study", study, "--child", *flags,
    ]  # fmt: skip


def check_shareable(storage: str, n_jobs: int) -> None:
    if n_jobs > 1 and storage.startswith("sqlite:"):
        raise ConfigError(
            "search.strategy.setup.n_jobs",
            "needs a store several processes can write: a journal file (the default) or "
            "postgresql://, not sqlite",
            n_jobs,
        )


def spawn(argvs: Sequence[list[str]]) -> list[subprocess.Popen]:
    """Start the extra workers; their own output is dropped (the parent reports progress)."""
    return [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
