"""Drawing only: sensitivity.png, the probes' grids (from `results.sensitivity.heat_grids`)."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from bitscout.results.plots import save

CMAP = "RdBu_r"  # zero white, a drop red, a gain blue
NOT_PROBED = "#d9d9d9"  # a choice that the row's dimension does not have


def _text_colour(value: float, limit: float) -> str:
    """White on the saturated ends of the scale, black elsewhere."""
    return "white" if abs(value) > 0.6 * limit else "black"


def _panel(ax: Axes, name: str, grid: pd.DataFrame, limit: float) -> None:
    values = grid.to_numpy(dtype=float)
    norm = Normalize(-limit, limit)
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad=NOT_PROBED)
    ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(len(grid.columns)), list(grid.columns))
    ax.set_yticks(range(len(grid.index)), list(grid.index), fontsize=8)
    ax.set_xlabel(f"{name} (the probe's choice)")
    ax.set_title(name, fontsize=9)
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8,
                    color=_text_colour(value, limit))  # fmt: skip


def sensitivity_png(grids: Sequence[tuple[str, pd.DataFrame]], label: str, path: Path) -> Path:
    """One panel per field side by side, on one colour scale centred on zero."""
    finite = [v for _, g in grids for v in g.to_numpy(dtype=float).ravel() if np.isfinite(v)]
    limit = max((abs(v) for v in finite), default=0.0) or 1.0
    norm = Normalize(-limit, limit)
    label_chars = max(len(str(i)) for _, g in grids for i in g.index)
    widths = [max(len(g.columns), 2) for _, g in grids]
    rows = max(len(g.index) for _, g in grids)
    size = (sum(0.75 * w + 0.08 * label_chars + 0.4 for w in widths) + 1.4, 0.42 * rows + 1.6)
    # The Figure API, not pyplot: the user's matplotlib backend is left alone.
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(1, len(grids), squeeze=False, gridspec_kw={"width_ratios": widths})
    for ax, (name, grid) in zip(axes[0], grids, strict=True):
        _panel(ax, name, grid, limit)
    fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=list(axes[0]), label=label)
    fig.suptitle("each cell: one choice applied alone (the tensor's other fields at their first "
                 "choice), everything else float; grey: not a choice", fontsize=8)  # fmt: skip
    return save(fig, path)
