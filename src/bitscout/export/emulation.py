"""hls4ml's compiled C++ emulation, run where it cannot take bitscout down: a failed `assert`
in its ap_types (SIGABRT) or a crash of the library ends a forked child, and bitscout says so
in one line instead of dying with the child's core dump."""

import faulthandler
import os
import pickle
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bitscout.errors import ConfigError

T = TypeVar("T")


def isolated(work: Callable[[], T], what: str) -> T:
    """`work()` in a forked child, its result (or its exception) handed back by a file. A
    child killed by a signal is a ConfigError naming the signal and the last line the child
    wrote to stderr (the failed assertion)."""
    with tempfile.TemporaryDirectory(prefix="bitscout-emulation-") as tmp:
        result, errors = Path(tmp) / "result.pickle", Path(tmp) / "stderr.txt"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's stack
            _child(work, result, errors)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            raise ConfigError("--verify", _died(what, -code, errors))
        try:
            ok, value = pickle.loads(result.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError) as err:
            rule = f"{what} ended with status {code} and no result ({_last_line(errors)})"
            raise ConfigError("--verify", rule) from err
    if not ok:
        raise value
    return value


def _child(work: Callable[[], Any], result: Path, errors: Path) -> None:
    code = 0
    try:
        fd = os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 2)  # C++ writes its assertion here, not to the user's terminal
        faulthandler.disable()  # the parent reports a fatal signal; no dump of this stack
        try:
            outcome: tuple[bool, Any] = (True, work())
        except BaseException as err:  # noqa: BLE001 - the parent raises it as its own
            outcome = (False, err)
            code = 1
        result.write_bytes(pickle.dumps(outcome))
    except BaseException:  # noqa: BLE001 - a child must exit, never unwind into the caller
        code = 2
    finally:
        os._exit(code)


def _died(what: str, signum: int, errors: Path) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return f"{what} was killed by {name} ({_last_line(errors)})"


def _last_line(errors: Path) -> str:
    try:
        lines = errors.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return " ".join(lines[-1].split()) if lines else "it wrote nothing to stderr"
