"""Writing output files whole or not at all, under one schema version."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bitscout.errors import ConfigError

# The version of every file bitscout writes (trials.csv, summary.json, best.toml, pareto.csv,
# ranked.csv, compare.csv, train.json). 3: one version for all; ranking by distinct config
# (`proposals`); summary.json gained `float`, `test`, `feasible`, `model_source`, `space`,
# `layers`, `metric_units`; infeasible trials name the constraint they break in `reason`.
SCHEMA_VERSION = 3


def _umask() -> int:
    """The process's umask, read without setting it (os.umask can only be read by changing it,
    which would race with other threads' file creation)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; it replaces `path` when the block
    succeeds and is removed when it fails, so a full disk or a read-only directory leaves
    neither a partial file nor a temporary one behind. Readers never see a half-written file.

    The temporary file is created by `mkstemp` (O_EXCL, an unpredictable name), so a link
    planted beside `path` is never written through; the rename replaces a link at `path`
    itself, never its target. An OSError names `path`, not the temporary file."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # a read-only or full directory: say which file could not be written
        raise OSError(err.errno, err.strerror, str(path)) from err
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would leave outputs unreadable
        finally:
            os.close(fd)
        yield tmp
        tmp.replace(path)
    except OSError as err:
        if err.filename is not None and Path(err.filename) != tmp:
            raise  # another file's error names that file; a write through a handle names none
        raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)


def output_dir(path: str | Path, key: str) -> Path:
    """An output directory to create or reuse: refused when a file is in the way (`key` names
    the flag or argument that gave it)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(key, "names an existing file, not a directory", str(path))
    return path


def write_text(path: Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
