"""`n_jobs > 1`: more worker processes on the same study (processes, not threads: PyTorch and
Python's GIL make threads share one core's worth of evaluation).

Workers are forked once the model, the data and the evaluator are ready, so they start at
once, share those pages with the parent, need no config file and see exactly the model and
data the parent sees (a plug-in or an in-memory model alike). Each opens the store again and
runs the strategy with its own seed; the parent writes the outputs once all are done.
"""

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess

from rich.console import Console

from bitscout.errors import ConfigError
from bitscout.study.store.secrets import scrub

INTERRUPTED_EXIT = 130


def check_shareable(storage: str | None, n_jobs: int) -> None:
    if n_jobs <= 1:
        return
    if storage is None:
        rule = "needs a store several processes can share: give an output directory or storage"
        raise ConfigError("search.strategy.setup.n_jobs", rule, n_jobs)
    if storage.startswith("sqlite:"):
        raise ConfigError(
            "search.strategy.setup.n_jobs",
            "needs a store several processes can write: a journal file (the default) or "
            "postgresql://, not sqlite",
            n_jobs,
        )


def _child(work: Callable[[int], None], index: int) -> None:
    """One extra worker: quiet on stdout, one line on stderr when it fails."""
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        try:
            work(index)
        except KeyboardInterrupt:
            sys.exit(INTERRUPTED_EXIT)
        except Exception as err:  # noqa: BLE001 - reported in one line, then exit 1
            text = scrub(" ".join(f"{type(err).__name__}: {err}".split()))
            print(f"bitscout: worker {index}: error: {text}", file=sys.stderr)
            sys.exit(1)


def fork(n_jobs: int, work: Callable[[int], None]) -> list[BaseProcess]:
    """Start workers 1..n_jobs-1 running `work(index)`."""
    if n_jobs <= 1:
        return []
    context = multiprocessing.get_context("fork")
    procs: list[BaseProcess] = [
        context.Process(target=_child, args=(work, i)) for i in range(1, n_jobs)
    ]
    for proc in procs:
        proc.start()
    return procs


def join(procs: Sequence[BaseProcess], console: Console) -> None:
    """Wait for the extra workers; on an interruption, stop them too (their running trials
    are recorded as interrupted and run again on resume)."""
    try:
        for proc in procs:
            proc.join()
            if proc.exitcode not in (0, INTERRUPTED_EXIT):
                console.print(f"a worker process ended with status {proc.exitcode}")
    except BaseException:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join()
        raise
