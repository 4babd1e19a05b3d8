"""The `bitscout` command: parse, dispatch to the command's module (`bitscout.cli.<name>`), print
errors in one line."""

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import NoReturn

from bitscout.cli.parser import build_parser
from bitscout.errors import ConfigError, SearchFailed

# command -> the module that runs it
COMMANDS = {
    "train": "train", "quantize": "train", "export": "export", "search": "search",
    "report": "report", "compare": "compare", "sensitivity": "sensitivity",
    "dashboard": "dashboard", "space": "space", "finetune": "finetune",
}  # fmt: skip


def error_line(err: ConfigError, config: str | None) -> str:
    """One line that names the file: errors about a config key get the config's path in front
    (flags, paths and errors that already name the file stand as they are)."""
    text = " ".join(str(err).split())
    if config is None or err.file or err.key.startswith(("--", config)):
        return text
    return f"{config}: {text}"


def os_error_line(err: OSError) -> str:
    """`cannot write runs/a/trials.csv: No space left on device (ENOSPC)`, in one line."""
    code = errno.errorcode.get(err.errno or 0)
    what = f"{err.strerror or err}" + (f" ({code})" if code else "")
    if err.filename is None:
        return " ".join(what.split())
    return f"cannot use {err.filename}: {' '.join(what.split())}"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a batch system's stop) ends a search like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        # imported after parsing: --help and usage errors stay fast
        module = import_module(f"bitscout.cli.{COMMANDS[args.func]}")
        func: Callable[[argparse.Namespace], int] = getattr(module, f"cmd_{args.func}")
        return func(args)
    except ConfigError as err:
        print(f"bitscout: error: {error_line(err, getattr(args, 'config', None))}", file=sys.stderr)
        return 2
    except SearchFailed as err:
        print(f"bitscout: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the machine, not the input: a full disk, a read-only directory
        if _during_interrupt(err):
            return _interrupted()
        print(f"bitscout: error: {os_error_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted()


def _during_interrupt(err: BaseException) -> bool:
    """Whether `err` was raised while unwinding from Ctrl-C or SIGTERM: Optuna's journal lock
    is released by renaming a file, and an interrupt between its steps leaves the rename to
    fail with ENOENT. That is the interrupt's doing, not the machine's."""
    seen: BaseException | None = err.__context__
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__context__
    return False


def _interrupted() -> int:
    print(
        "bitscout: interrupted; finished trials are kept in the store, "
        "run the same command again to resume",
        file=sys.stderr,
    )
    return 130


def run() -> NoReturn:
    """The `bitscout` command: `main`, then out without the interpreter's teardown. Tearing
    down PyTorch, pandas and matplotlib takes 0.3 to 0.6 s and frees nothing the operating
    system does not; every output file is closed (and the store synced) by then."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
