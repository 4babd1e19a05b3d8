"""Writing output files whole or not at all, under one schema version."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The version of every file bitscout writes (trials.csv, summary.json, best.toml, pareto.csv,
# ranked.csv, compare.csv, train.json). 3: one version for all; ranking by distinct config
# (`proposals`); summary.json gained `float`, `test`, `feasible`, `model_source`, `space`,
# `layers`, `metric_units`; infeasible trials name the constraint they break in `reason`.
SCHEMA_VERSION = 3


@contextmanager
def atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; it replaces `path` when the block
    succeeds and is removed when it fails, so a full disk or a read-only directory leaves
    neither a partial file nor a temporary one behind. Readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: shared run dirs
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
