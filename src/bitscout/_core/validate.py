"""Checks shared by every part that reads user input: known keys, numbers, seeds."""

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from bitscout.errors import ConfigError

SEED_MAX = 2**32 - 1  # NumPy's and Optuna's samplers refuse larger seeds


def suggest(name: str, known: list[str] | tuple[str, ...]) -> str:
    """`; did you mean 'x'?` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown(noun: str, name: object, known: Sequence[str]) -> str:
    """The one wording of an unknown name: `unknown <noun>; did you mean 'x'?; known: a, b`
    (the suggestion only when a known name is close)."""
    hint = suggest(name, tuple(known)) if isinstance(name, str) else ""
    return f"unknown {noun}{hint}; known: {', '.join(known) or 'none'}"


def check_keys(table: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
    """Reject keys of `table` that are not in `known`, suggesting the closest."""
    for k in table:
        if k not in known:
            key = f"{prefix}.{k}" if prefix else k
            raise ConfigError(key, unknown("key", k, known))


def finite_float(value: object) -> float | None:
    """`value` as a finite float; None for non-numbers, bools, inf, nan and integers too large
    for a float (TOML allows them; math.isfinite would raise OverflowError on them)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
