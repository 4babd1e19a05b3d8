"""The fast engine held to the plain path: its metrics must be the plain path's.

Before a search the space's extreme candidates (every dimension's lowest choice, then every
highest) are scored both ways; during it a seeded random sample of the candidates the fast
engine scores is scored again by the plain path (`quantize_model`, then the model's own
forward). Accuracy must agree exactly and every other forward metric to LOSS_RTOL relative:
the fast path keeps each sample's predicted class and groups the sums of the loss only
differently (see `Evaluator`).
"""

import functools
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bitscout.errors import SearchFailed

if TYPE_CHECKING:  # the search's spec reads AUDIT_RATE without importing torch
    from bitscout.quant.choices import Dimension
    from bitscout.quant.space import Choice, Config, SearchSpace

AUDIT_RATE = 1 / 50  # the share of the fast engine's candidates re-derived by the plain path
AUDIT_MIN = 2  # at least this many: the first candidates the fast engine scores
LOSS_RTOL = 1e-6
EXACT = ("accuracy", "overflow_rate")  # counts of rows or values: equal, not close


def disagreement(fast: Mapping[str, float], plain: Mapping[str, float]) -> str | None:
    """The first metric the two paths give differently, both figures, or None."""
    for name, want in plain.items():
        got = fast[name]
        if math.isnan(got) and math.isnan(want):
            continue
        tolerance = 0.0 if name in EXACT else LOSS_RTOL
        if not math.isclose(got, want, rel_tol=tolerance, abs_tol=0.0):
            return f"{name} = {got!r} by the fast engine, {want!r} by the plain path"
    return None


def extremes(space: "SearchSpace") -> "list[Config]":
    """The candidates of every dimension's lowest choice and of every highest (first and
    last where the choices are not all numbers), distinct; where one is no candidate of a
    space that skips combinations, its first or last candidate instead."""
    found: list[Config] = []
    for index, lowest in ((0, True), (space.size - 1, False)):
        config = space.draw(functools.partial(_end, lowest=lowest))
        if space.invalid(config) is not None:
            config = space.config(index)
        if config not in found:
            found.append(config)
    return found


def _end(dimension: "Dimension", *, lowest: bool) -> "Choice":
    choices = dimension.choices
    if all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices):
        return min(choices) if lowest else max(choices)
    return choices[0] if lowest else choices[-1]


@dataclass
class Audit:
    """Which of the fast engine's candidates to re-derive by the plain path (the first
    AUDIT_MIN, then each with probability `rate`, drawn from `seed`), and the tally.
    `rate` 0 re-derives none."""

    rate: float = AUDIT_RATE
    seed: int = 0
    engine: str = "fast"  # "plain": the evaluator scores every candidate by the plain path
    rederived: int = 0
    matched: int = 0
    seen: int = 0  # candidates the fast engine scored
    _draws: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._draws = random.Random(self.seed)

    def pick(self, n: int) -> list[int]:
        """Which of `n` candidates the fast engine just scored to re-derive."""
        if self.rate <= 0:
            self.seen += n
            return []
        chosen = []
        for i in range(n):
            draw = self._draws.random()  # one draw each: the sample does not depend on blocks
            if self.seen < AUDIT_MIN or draw < self.rate:
                chosen.append(i)
            self.seen += 1
        return chosen

    def check(self, label: str, fast: Mapping[str, float], plain: Mapping[str, float]) -> None:
        """Count one re-derived candidate; SearchFailed with both figures when they differ."""
        self.rederived += 1
        found = disagreement(fast, plain)
        if found is not None:
            raise SearchFailed(
                f"audit: candidate {label} scored {found}: the fast engine does not compute "
                "what the model computes, so the search stopped (its numbers cannot be trusted)"
            )
        self.matched += 1

    def summary(self) -> dict[str, Any]:
        """summary.json's `audit`: the sampling rate, the engine that scored the candidates,
        how many the fast engine scored, how many were re-derived, how many matched."""
        return {"rate": self.rate, "engine": self.engine, "scored": self.seen,
                "rederived": self.rederived, "matched": self.matched}  # fmt: skip
