"""A chunked brute force keeps one Optuna trial per chunk, not per candidate: an Optuna trial
costs about 5 KB of memory in every worker (the journal and the RDB cache hold them all), so a
million candidates would need gigabytes. The chunk's token trial carries its candidates'
results as one compact attribute: their indices and metrics as float64 columns, compressed
(about 20 to 40 bytes a candidate), which any storage keeps, files and PostgreSQL alike.

The results pipeline reads them back as columns (`chunk_frame`), never as per-candidate
Python objects."""

import base64
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from bitscout.results.trials import Chunk, Result
from bitscout.study.store.base import (
    COUNT,
    FAILURES,
    METRIC_NAMES,
    ROWS,
    TrialRecord,
    has_ended,
)


def encode(indices: Sequence[int], results: Sequence[Result], names: Sequence[str]) -> str:
    """Indices (int64) then one float64 column per metric (NaN where a candidate failed),
    zlib-compressed, base64 text: a trial attribute must be JSON."""
    table = np.full((len(names), len(results)), np.nan)
    for j, result in enumerate(results):
        for i, name in enumerate(names):
            if name in result.metrics:
                table[i, j] = result.metrics[name]
    raw = np.asarray(indices, dtype="<i8").tobytes() + table.astype("<f8").tobytes()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def decode(text: str, names: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The candidate indices and each metric's column of an `encode`d chunk."""
    raw = zlib.decompress(base64.b64decode(text))
    n = len(raw) // (8 * (1 + len(names)))
    indices = np.frombuffer(raw, dtype="<i8", count=n)
    table = np.frombuffer(raw, dtype="<f8", offset=8 * n).reshape(len(names), n)
    return indices, {name: table[i] for i, name in enumerate(names)}


def is_chunk(trial: TrialRecord) -> bool:
    """A completed chunk token: one that ran to an end (`has_ended`). A token interrupted
    after its rows were written but before its state was (running, then failed as
    interrupted) holds rows its chunk's next token evaluates again: they are not counted."""
    return has_ended(trial) and ROWS in trial.user_attrs


def token_attrs(
    indices: Sequence[int], results: Sequence[Result], names: Sequence[str]
) -> dict[str, Any]:
    """What a finished chunk token records besides its own candidate's result."""
    failures = {str(i): r.failure for i, r in zip(indices, results, strict=True) if r.failure}
    return {
        ROWS: encode(indices, results, names),
        COUNT: len(indices),
        FAILURES: failures,
        METRIC_NAMES: list(names),
    }


def chunk_of(trial: TrialRecord) -> Chunk:
    """A chunk token's candidate indices, metric columns and failures."""
    attrs = trial.user_attrs
    indices, metrics = decode(attrs[ROWS], attrs[METRIC_NAMES])
    return Chunk(trial.number, indices, metrics, attrs.get(FAILURES, {}))
