"""An `ilp` search's surrogate in words: how far its additive model's predicted objective was
from the measured one (summary.json's `ilp_fit`), for the console and report.md alike."""

import math
from collections.abc import Mapping

POOR_R2 = 0.5  # below it the model explains too little of the objective to rank candidates


def fit_text(fit: Mapping[str, float]) -> str:
    """`fit` = {r2, max_miss, n} in one line; a second sentence when the model fails."""
    r2 = fit["r2"]
    shown = f"{r2:.3f}" if math.isfinite(r2) else "undefined (every measured objective equal)"
    line = (f"predicted against measured objective over {int(fit['n'])} solutions: "
            f"R² = {shown}, largest miss {fit['max_miss']:.4g}")  # fmt: skip
    if r2 < POOR_R2:
        line += f". The additive model fails here (R² < {POOR_R2:g}): it misranks what it picked"
    return line
