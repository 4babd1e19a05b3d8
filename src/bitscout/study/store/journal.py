"""Repair of an Optuna journal file left torn by a crash, a full disk or a power loss.

Optuna's journal is one JSON record per line, appended under a file lock. A write cut short
leaves a partial last line: Optuna skips it when reading but appends the next record right
after it, gluing the two into one undecodable line, and from then on the file cannot be read
at all. Repairing before anything is written keeps every complete record.

What is Optuna's here (its lock, how its records begin) is given by the caller,
`optuna_store.repair_journal`: this module only knows JSON lines.
"""

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from bitscout._core.files import atomic


def _decodes(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return False
    return True


def _sound_tail(path: Path) -> bool:
    """Whether the file is empty or ends with a newline after a decodable last record: the
    cheap check made on every open (the whole file is only read when it fails)."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - 65536))
        tail = f.read()
    if not tail:
        return True
    if not tail.endswith(b"\n"):
        return False
    start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
    if start == 0 and size > len(tail):
        return False  # a last line longer than the window: let the full check decide
    return _decodes(tail[start:-1])


def _mend(data: bytes, record_start: bytes) -> tuple[bytes, bytes]:
    """`data` with every undecodable line dropped or cut back to the record glued onto its
    end; and the bytes removed."""
    kept, cut = [], []
    lines = data.split(b"\n")
    last = lines.pop()  # after the final newline: b"" unless the last line is torn
    for line in lines:
        if _decodes(line):
            kept.append(line)
            continue
        start = line.rfind(record_start)
        if start > 0 and _decodes(line[start:]):  # a torn record with a whole one after it
            kept.append(line[start:])
            cut.append(line[:start])
        else:
            cut.append(line)
    if last and _decodes(last):
        kept.append(last)  # a whole record whose newline was lost
    elif last:
        cut.append(last)
    body = b"\n".join(kept)
    return (body + b"\n" if kept else b""), b"\n".join(cut)


def repair(
    path: str | Path,
    lock: Callable[[], AbstractContextManager[object]],
    record_start: bytes,
    *,
    full: bool = False,
) -> str | None:
    """Make the journal at `path` readable and safe to append to, under the writers' `lock`
    so no live writer is cut off; `record_start` is how every record begins. Only the last
    line is looked at unless it is torn or `full` is set (after Optuna failed to read the
    file). Returns what was done, in one line, or None
    when the file was sound. Removed bytes are kept in a `.torn-<time>` file beside it."""
    path = Path(path)
    if not path.is_file() or (not full and _sound_tail(path)):
        return None
    with lock():
        data = path.read_bytes()
        mended, cut = _mend(data, record_start)
        if mended == data:
            return None
        kept = ""
        if cut:
            keep = path.with_name(f"{path.name}.torn-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}")
            keep.write_bytes(cut)
            kept = f"removed {len(cut)} bytes of a record torn by a crash or a full disk (kept "
            kept += f"in {keep.name}); "
        with atomic(path) as tmp:
            tmp.write_bytes(mended)
    return f"repaired {path}: {kept or 'ended its last line; '}every complete record is kept"
