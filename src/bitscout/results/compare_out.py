"""`bitscout compare`'s outputs: compare.csv, compare.md, plots/compare.png and the console
table."""

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from bitscout._core.files import atomic, write_text

COLUMNS = ("schema_version", "strategy", "seed", "trial", "config", "objective", "best_so_far",
           "regret")  # fmt: skip
HATCHES = ["///", "\\\\\\", "...", "xx", "++", "oo", "--", "||"]
HEADERS = (
    "strategy", "seeds", "trials", "median final best", "trials to optimum (median; never)",
    "trials to within 1% (median; never)", "mean regret AUC",
)  # fmt: skip
BUDGETS = (50, 100, 200, 500, 1000)  # trials at which compare.md shows each best so far


@dataclass(frozen=True)
class CompareResult:
    """What `bitscout.compare` (and `bitscout compare`) found."""

    rows: list[dict]  # the compare.csv rows (None where a cell is empty)
    summary: list[dict]  # one per strategy, in the order asked
    optimum: float | None  # best feasible objective of the space; None when not enumerated
    evaluated: int  # distinct candidates evaluated by the whole comparison
    files: list[Path] = field(default_factory=list)  # compare.csv, compare.md, the plot

    @property
    def frame(self) -> pd.DataFrame:
        """compare.csv's rows: one per trial of every strategy and seed."""
        return pd.DataFrame(self.rows, columns=list(COLUMNS))


def _num(value: float | None, missing: str = "-") -> str:
    return missing if value is None else f"{value:.6g}"


def cells(entry: dict[str, Any]) -> list[str]:
    """One summary row as text, for compare.md and the console alike."""
    low, high = min(entry["trials"]), max(entry["trials"])
    hits = [
        "n/a" if never is None else f"{_num(median)}; {never}"
        for median, never in (
            (entry["trials_to_optimum"], entry["never_optimum"]),
            (entry["trials_to_1pct"], entry["never_1pct"]),
        )
    ]
    return [
        entry["strategy"],
        str(entry["seeds"]),
        str(low) if low == high else f"{low}-{high}",
        _num(entry["final_best"]),
        *hits,
        _num(entry["regret_auc"], "n/a"),
    ]


def write_outputs(out: Path, result: CompareResult, header: str, title: str) -> list[Path]:
    """compare.csv, compare.md and plots/compare.png."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic(out / "compare.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")  # None: empty cell
        writer.writeheader()
        writer.writerows(result.rows)
    write_text(out / "compare.md", markdown(result.summary, header))
    draw(out / "plots" / "compare.png", result.summary, result.optimum, title)
    return [out / "compare.csv", out / "compare.md", out / "plots" / "compare.png"]


def markdown(summary: Sequence[dict[str, Any]], header: str) -> str:
    lines = [
        "# bitscout compare",
        "",
        header,
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" for _ in HEADERS) + "|",
        *("| " + " | ".join(cells(e)) + " |" for e in summary),
        *budget_table(summary),
    ]
    return "\n".join(lines) + "\n"


def budget_table(summary: Sequence[dict[str, Any]]) -> list[str]:
    """The median best so far at equal budgets: how strategies compare where the optimum
    is unknown. Empty when every run is shorter than the first budget."""
    budgets = list(summary[0]["best_at"]) if summary else []
    if not budgets:
        return []
    head = ["strategy", *(f"best at {n} trials (median)" for n in budgets)]
    rows = [[e["strategy"], *(_num(e["best_at"][n]) for n in budgets)] for e in summary]
    return ["", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]  # fmt: skip


def draw(path: Path, summary: Sequence[dict[str, Any]], optimum: float | None, title: str) -> None:
    """Best so far against trials: the mean over seeds with its interquartile band."""
    # The Figure API needs no pyplot and so leaves matplotlib's global backend alone;
    # imported here because matplotlib is slow to import and only this draws.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for entry, hatch in zip(summary, HATCHES * len(summary), strict=False):
        band = entry["best_so_far"]
        x = np.arange(1, len(band["mean"]) + 1)
        (line,) = ax.plot(x, band["mean"], label=f"{entry['strategy']}: mean over seeds")
        # a hatch of its own, so overlapping bands stay apart in print and for colour-blindness
        ax.fill_between(x, band["q25"], band["q75"], facecolor=line.get_color(), alpha=0.15,
                        hatch=hatch, edgecolor=line.get_color(), linewidth=0,
                        label=f"{entry['strategy']}: interquartile range")  # fmt: skip
    if optimum is not None:
        ax.axhline(optimum, color="black", linestyle="--", linewidth=1, label="optimum")
    ax.set(xlabel="trial", ylabel="best objective so far", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def show(console: Console, summary: Sequence[dict[str, Any]], header: str) -> None:
    table = Table(title="strategy comparison", caption=header, box=box.SIMPLE_HEAD)
    for i, name in enumerate(HEADERS):  # the strategy's name is never cut, headers wrap
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for entry in summary:
        table.add_row(*cells(entry))
    console.print(table)
