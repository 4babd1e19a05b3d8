"""Drawing only: every function takes finished tables and writes one PNG (matplotlib's Agg).

Figures are made with `matplotlib.figure.Figure`, not pyplot: files only, never a window, and
the user's matplotlib backend and pyplot figures are left as they were.
"""

import gc
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave
from matplotlib.ticker import AutoLocator, MaxNLocator, ScalarFormatter

from bitscout._core.files import atomic

DPI = 100


def _margins(fig: Figure, left: float = 0.9, bottom: float = 0.55, right: float = 0.25,
             top: float = 0.3, wspace: float = 0.3, hspace: float = 0.15) -> None:  # fmt: skip
    """Fixed margins in inches: tight_layout would lay each figure out in a draw pass of its
    own, a third of a report's drawing time."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wspace, hspace=hspace)  # fmt: skip


@contextmanager
def _no_font_fallback_lines() -> Iterator[None]:
    """Log axes' tick labels use mathtext, whose Computer Modern fonts some matplotlib installs
    lack: each fallback to DejaVu Sans was a "findfont" line on the user's console. Silenced
    while drawing only, so the user's own logging setup stays as it was."""
    log = logging.getLogger("matplotlib.font_manager")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a report is drawn: a figure allocates tens of
    thousands of objects, enough to start a full collection over the search's whole heap
    (torch, pandas, the study: 0.2 s, a third of a report's time, in one run of three). What
    is left for it is collected when it runs next."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# zlib's fastest level: the same pixels as the default level 6 in 2/3 of the encoding time,
# for files about 15% larger
PNG = {"compress_level": 1}


def _fewer_ticks(fig: Figure) -> None:
    """At most about 6 ticks on each linear axis (matplotlib's default allows up to 9): each
    tick is five artists (two marks, a grid line, two labels), and making them was the largest
    part of drawing a report."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if type(axis.get_major_locator()) is AutoLocator:
                axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))


def save(fig: Figure, path: Path) -> Path:
    """Draw `fig` and write it to `path` as PNG; inside `written_behind`, the PNG is encoded
    and written in a thread while the caller goes on."""
    _fewer_ticks(fig)
    fig.set_dpi(DPI)
    canvas = FigureCanvasAgg(fig)
    with _no_font_fallback_lines():
        canvas.draw()
    pixels = canvas.buffer_rgba()  # holds the renderer, and so its pixels, until written
    path.parent.mkdir(parents=True, exist_ok=True)
    behind = _BEHIND.get()
    if behind is None:
        _write_png(pixels, path)
    else:
        behind[1].append(behind[0].submit(_write_png, pixels, path))
    return path


def _write_png(pixels: memoryview, path: Path) -> None:
    with atomic(path) as tmp:
        imsave(tmp, pixels, format="png", dpi=DPI, pil_kwargs=PNG)


_BEHIND: ContextVar[tuple[ThreadPoolExecutor, list[Future[None]]] | None] = ContextVar(
    "bitscout_png_writer", default=None
)


@contextmanager
def written_behind() -> Iterator[None]:
    """Every PNG that `save` makes in the block is encoded and written in one thread while the
    next figure is drawn (zlib runs without the GIL: a report's 4 figures spent 0.05-0.06 s
    encoding); every file is written, or its error raised, when the block ends."""
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="bitscout-png") as pool:
        token = _BEHIND.set((pool, pending))
        try:
            yield
        finally:
            _BEHIND.reset(token)
    for done in pending:
        done.result()


MAX_POINTS = 20_000  # drawn per series: a million markers take minutes and show no more


def thin(n: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Positions of at most about MAX_POINTS of n points, evenly spread, plus `keep` (a mask
    or positions that must be drawn, such as a front or the changes of a running best)."""
    every = np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).astype(np.int64))
    if keep is None:
        return every
    kept = np.flatnonzero(keep) if keep.dtype == bool else keep
    return np.union1d(every, kept).astype(np.int64)


def label(name: str, units: Mapping[str, str]) -> str:
    unit = units.get(name)
    return f"{name} [{unit}]" if unit else name


def metrics_png(df: pd.DataFrame, metrics: Sequence[str], units: Mapping[str, str],
                path: Path) -> Path:  # fmt: skip
    """One panel per metric that varies, each trial a point, in the order trials finished."""
    fig = Figure(figsize=(8, 1.9 * len(metrics) + 0.6))
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)
    shown = thin(len(df))
    x = shown + 1
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        ax.plot(x, df[metric].to_numpy()[shown], "o", markersize=2.5, alpha=0.7)
        ax.set_ylabel(label(metric, units), fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("trial, in the order trials finished")
    _margins(fig, left=1.0, top=0.15)
    return save(fig, path)


def best_so_far_png(values: np.ndarray, best: np.ndarray, ylabel: str, path: Path) -> Path:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    changes = np.flatnonzero(np.r_[True, best[1:] != best[:-1]])  # NaN != NaN: kept too
    shown = thin(len(values), np.append(changes, len(values) - 1) if len(values) else None)
    x = shown + 1
    ax.plot(x, values[shown], "o", markersize=2.5, alpha=0.4, label="trial")
    ax.step(x, best[shown], where="post", label="best so far")
    ax.set_xlabel("trial, in the order trials finished")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    _margins(fig)
    return save(fig, path)


def pareto_png(df: pd.DataFrame, x: str, y: str, front: np.ndarray, units: Mapping[str, str],
               path: Path) -> Path:  # fmt: skip
    """Every trial faded, the Pareto front highlighted and joined."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    dominated = df[~front].iloc[thin(int((~front).sum()))]
    ax.scatter(dominated[x], dominated[y], s=10, alpha=0.3, label="dominated")
    ordered = df[front].sort_values(x)
    ax.plot(ordered[x], ordered[y], "o-", color="tab:red", label="Pareto front")
    ax.set_xlabel(label(x, units))
    ax.set_ylabel(label(y, units))
    ax.legend()
    ax.grid(alpha=0.3)
    _margins(fig)
    return save(fig, path)


def tradeoff_png(
    df: pd.DataFrame, costs: Sequence[str], fronts: Mapping[str, np.ndarray],
    baseline: Mapping[str, float] | None, units: Mapping[str, str], path: Path,
) -> Path:  # fmt: skip
    """Accuracy against each cost, every trial a point, the front of the two drawn, and the
    float model marked."""
    fig = Figure(figsize=(5.2 * len(costs), 4.2))
    axes = fig.subplots(1, len(costs), squeeze=False)
    for ax, cost in zip(axes[0], costs, strict=True):
        front = fronts[cost]
        shown = df.iloc[thin(len(df), front)]
        ax.scatter(shown[cost], shown["accuracy"], s=10, alpha=0.35, label="trial")
        ordered = df[front].sort_values(cost)
        ax.step(ordered[cost], ordered["accuracy"], where="post", color="tab:red", marker="o",
                markersize=4, label="front: no trial better in both")  # fmt: skip
        if baseline and cost in baseline and "accuracy" in baseline:
            ax.scatter([baseline[cost]], [baseline["accuracy"]], marker="*", s=120,
                       color="black", label="float model", zorder=3)  # fmt: skip
            ax.axhline(baseline["accuracy"], color="black", linestyle=":", linewidth=1)
        _cost_axis(ax, cost)
        ax.set_xlabel(label(cost, units))
        ax.set_ylabel(label("accuracy", units))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    _margins(fig, wspace=0.25)
    return save(fig, path)


def _cost_axis(ax: Axes, cost: str) -> None:
    """Costs span decades (BOPs) or the float model's 32 bits against 2 to 8: a log axis keeps
    the trials from being squeezed into one corner; bits get plain tick labels."""
    if cost == "average_bitwidth":
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
    else:
        ax.set_xscale("log")


def importances_png(importances: Mapping[str, float], path: Path) -> Path:
    """Which dimension (layer and tensor) matters: Optuna's parameter importances."""
    names = list(importances)[::-1]
    fig = Figure(figsize=(7, 0.35 * len(names) + 1.2))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance: how much each choice marks the best 10% of trials\n"
                  "(Optuna's PED-ANOVA, sums to 1)", fontsize=8)  # fmt: skip
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3, axis="x")
    _margins(fig, left=0.3 + 0.065 * max(map(len, names)), bottom=0.65, top=0.15)
    return save(fig, path)


def _text_colour(rgba: Sequence[float]) -> str:
    """Black on light cells, white on dark ones (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def heatmap_png(grids: Sequence[tuple[pd.DataFrame, str]], path: Path) -> Path:
    """One heatmap per (grid, label), side by side: rows x columns of choices."""
    first = grids[0][0]
    width = (1.1 * len(first.columns) + 2.8) * len(grids)
    fig = Figure(figsize=(width, 0.55 * len(first.index) + 2))
    axes = fig.subplots(1, len(grids), squeeze=False)
    for ax, (grid, name) in zip(axes[0], grids, strict=True):
        values = grid.to_numpy(dtype=float)
        image = ax.imshow(values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
        ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index])
        ax.set_xlabel(str(grid.columns.name or ""))
        ax.set_ylabel(str(grid.index.name or ""))
        ax.set_title(name, fontsize=9)
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                colour = _text_colour(image.cmap(image.norm(value)))
                ax.text(j, i, f"{value:.3g}", ha="center", va="center", color=colour, fontsize=8)
        fig.colorbar(image, ax=ax, label=name)
    _margins(fig, left=1.0, bottom=0.7, right=0.1, top=0.4, wspace=0.45)
    return save(fig, path)
