"""A report's pictures drawn in two processes. matplotlib's drawing is mostly Python (ticks,
text, artists), so a thread would wait on the GIL; a forked child draws the first picture
(metrics.png, the largest) on another core while this process draws the rest. A report's
four figures took 0.37 s of a 1,000-trial search's 0.50 s output phase one after the other.

Only on Linux with two CPUs or more: fork is unsafe on macOS, and one core gains nothing.
The child writes its files and exits with status 0; whatever else happens to it (an error, a
signal, a failed fork), this process draws the child's pictures itself, so an error is raised
here as it would be without the child, and nothing is ever left half drawn. The fork waits
for the imports a search runs in the background (`_core.processes`).
"""

import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from bitscout._core.processes import cpu_count, imports_settled
from bitscout.results import plots

Picture = tuple[Path, Callable[[Path], Path]]  # a file, and what draws it there


def drawn(pictures: Sequence[Picture]) -> list[Path]:
    """Draw every picture to its file; the files, in order."""
    theirs, ours = pictures[:1], pictures[1:]  # the first, the report's largest, as the rest
    pid = _fork() if ours and _cpus() >= 2 else None
    if pid is None:
        _draw(pictures)
    else:
        if pid == 0:
            _child(theirs)
        try:
            _draw(ours)
        finally:  # reaped whatever happens here
            done = _succeeded(pid)
        if not done:
            _draw(theirs)
    return [path for path, _ in pictures]


def _draw(pictures: Sequence[Picture]) -> None:
    for path, draw in pictures:
        draw(path)


def _cpus() -> int:
    return cpu_count() if sys.platform == "linux" else 1


def _fork() -> int | None:
    """A child's pid (0 in the child), or None when the fork fails."""
    imports_settled()
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        # Python 3.12+ warns on any fork of a process with threads (torch's, the PNG
        # writer's); the child only draws with matplotlib and leaves through os._exit
        warnings.filterwarnings("ignore", r".*multi-threaded.*fork", DeprecationWarning)
        try:
            return os.fork()
        except OSError:  # no memory or no process left: everything is drawn here
            return None


def _succeeded(pid: int) -> bool:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): its status is lost
        return False
    return os.waitstatus_to_exitcode(status) == 0


def _child(pictures: Sequence[Picture]) -> NoReturn:
    code = 1
    try:
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)  # the parent says what failed, drawing it again itself
        os.dup2(quiet, 2)
        with plots.written_behind():  # a writer thread of its own: the parent's is not here
            _draw(pictures)
        code = 0
    finally:  # a child must exit, never unwind into the caller
        os._exit(code)
