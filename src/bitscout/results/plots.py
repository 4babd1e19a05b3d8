"""Drawing only: every function takes a finished table and writes one PNG."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bitscout.files import atomic

MAX_WIDTH_IN = 24  # wider figures cost memory (GBs for 20,000 trials) and nobody reads them
LABELLED_MAX = 60  # beyond this many trials, config labels on the x axis are unreadable


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    try:
        with atomic(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def metrics_figure(df: pd.DataFrame, metrics: Sequence[str], labels: Sequence[str]) -> plt.Figure:
    """One panel per metric against the trials in the order they finished, x ticks labelled
    with the config when there are few enough to read."""
    fig, axes = plt.subplots(
        len(metrics),
        1,
        figsize=(min(MAX_WIDTH_IN, max(8, 0.25 * len(df))), 2.4 * len(metrics)),
        sharex=True,
        squeeze=False,
    )
    x = np.arange(1, len(df) + 1)
    style = "o-" if len(df) <= LABELLED_MAX else "."  # thousands of trials: points only
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        ax.plot(x, df[metric], style, markersize=3, linewidth=0.8)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    bottom = axes[-1, 0]
    bottom.set_xlabel("trials finished")
    if len(df) <= LABELLED_MAX:
        bottom.set_xticks(x, labels, rotation=90, fontsize=6)
    return fig


def metrics_png(
    df: pd.DataFrame, metrics: Sequence[str], labels: Sequence[str], path: Path
) -> Path:
    return _save(metrics_figure(df, metrics, labels), path)


def best_so_far_png(
    numbers: np.ndarray, values: np.ndarray, best: np.ndarray, label: str, path: Path
) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(numbers, values, ".", alpha=0.4, label="trial")
    ax.step(numbers, best, where="post", label="best so far")
    ax.set_xlabel("trials finished")
    ax.set_ylabel(label)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pareto_png(df: pd.DataFrame, x: str, y: str, front: np.ndarray, path: Path) -> Path:
    """Every trial faded, the Pareto front highlighted and joined."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(df[x][~front], df[y][~front], alpha=0.25, label="dominated")
    ordered = df[front].sort_values(x)
    ax.plot(ordered[x], ordered[y], "o-", color="tab:red", label="Pareto front")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def heatmap_png(grid: pd.DataFrame, label: str, path: Path) -> Path:
    """`grid`: rows x columns of choices (one column for a one-dimensional space)."""
    fig, ax = plt.subplots(figsize=(1.2 * len(grid.columns) + 3, 0.6 * len(grid.index) + 2))
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
    ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index])
    ax.set_xlabel(str(grid.columns.name or ""))
    ax.set_ylabel(str(grid.index.name or ""))
    for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.3g}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(image, ax=ax, label=label)
    return _save(fig, path)
