"""`bitscout compare`'s outputs: compare.csv, compare.md, compare.json, plots/compare.png and
the console table."""

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from bitscout._core.files import SCHEMA_VERSION, atomic, write_text

COLUMNS = ("schema_version", "strategy", "seed", "trial", "config", "objective", "best_so_far",
           "regret")  # fmt: skip
HATCHES = ["///", "\\\\\\", "...", "xx", "++", "oo", "--", "||"]
CENSORED_NOTE = (
    "Trials to the optimum (and to within the threshold): the Kaplan-Meier median over seeds, "
    "a seed that never got there counting as still beyond its run's length; `> N` when more "
    "than half the seeds never got there in N trials; then how many seeds got there."
)


@dataclass(frozen=True)
class CompareResult:
    """What `bitscout.compare` (and `bitscout compare`) found.

    Attributes:
        rows: compare.csv's rows, one per trial of every strategy and seed (None where a
            cell is empty); `frame` gives them as a DataFrame.
        summary: one dict per strategy, in the order asked: the regret, the trials to the
            optimum and to within `within` % of it (Kaplan-Meier medians over seeds, with the
            seeds that never got there), the median best so far at each budget (`best_at`),
            the final picks' median test score (`final_test`).
        optimum: the best feasible objective value of the space; None when the space was
            too large to enumerate (over 100,000 candidates).
        evaluated: distinct candidates evaluated by the whole comparison.
        files: the files written (compare.csv, compare.md, compare.json, the plot).
        picks: each run's final pick: strategy, seed, trial, config, validation and test
            objective.
        provenance: what re-derives the result: the command, the options, bitscout's version
            and commit, the model.
    """

    rows: list[dict]  # the compare.csv rows (None where a cell is empty)
    summary: list[dict]  # one per strategy, in the order asked
    optimum: float | None  # best feasible objective of the space; None when not enumerated
    evaluated: int  # distinct candidates evaluated by the whole comparison
    files: list[Path] = field(default_factory=list)  # compare.csv, compare.md, the plot...
    # each run's final pick: strategy, seed, trial, config, validation and test objective
    picks: list[dict] = field(default_factory=list)
    # what re-derives the result: command, options, bitscout's version and commit, the model
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def frame(self) -> pd.DataFrame:
        """compare.csv's rows: one per trial of every strategy and seed."""
        return pd.DataFrame(self.rows, columns=list(COLUMNS))


def _num(value: float | None, missing: str = "-") -> str:
    return missing if value is None else f"{value:.6g}"


def censored_cell(entry: dict[str, Any], name: str) -> str:
    """`35.5; 6/10` (6 of 10 seeds got there), `> 500; 4/10`, or n/a without an optimum."""
    never = entry[f"never_{name}"]
    if never is None:
        return "n/a"
    seeds, median = len(entry["trials"]), entry[f"trials_to_{name}"]
    shown = f"> {max(entry['trials'])}" if median is None else _num(median)
    return f"{shown}; {seeds - never}/{seeds}"


def tested(summary: Sequence[dict[str, Any]]) -> bool:
    """Whether the final picks were scored on a test split (a column of its own)."""
    return any(e.get("final_test") is not None for e in summary)


def headers(summary: Sequence[dict[str, Any]]) -> list[str]:
    within = _num(summary[0]["within"]) if summary else "1"
    test = ["its test score (median)"] if tested(summary) else []
    hits = [f"trials to {what} (KM median; seeds reached)"
            for what in ("optimum", f"within {within}%")]  # fmt: skip
    return ["strategy", "seeds", "trials", "median final best (validation)", *test, *hits,
            "mean regret AUC"]  # fmt: skip


def cells(entry: dict[str, Any], test: bool = False) -> list[str]:
    """One summary row as text, for compare.md and the console alike."""
    low, high = min(entry["trials"]), max(entry["trials"])
    return [
        entry["strategy"],
        str(entry["seeds"]),
        str(low) if low == high else f"{low}-{high}",
        _num(entry["final_best"]),
        *([_num(entry.get("final_test"))] if test else []),
        censored_cell(entry, "optimum"),
        censored_cell(entry, "within"),
        _num(entry["regret_auc"], "n/a"),
    ]


def write_outputs(out: Path, result: CompareResult, header: str, title: str) -> list[Path]:
    """compare.csv, compare.md, compare.json and plots/compare.png."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic(out / "compare.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")  # None: empty cell
        writer.writeheader()
        writer.writerows(result.rows)
    write_text(out / "compare.md", markdown(result.summary, header, result.provenance))
    write_text(out / "compare.json", as_json(result, header))
    draw(out / "plots" / "compare.png", result.summary, result.optimum, title)
    return [out / n for n in ("compare.csv", "compare.md", "compare.json", "plots/compare.png")]


def _plain(value: Any) -> Any:
    """JSON's own values: NaN (a trial where no seed is feasible yet) becomes null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def as_json(result: CompareResult, header: str) -> str:
    doc = {"schema_version": SCHEMA_VERSION, "provenance": result.provenance, "facts": header,
           "optimum": result.optimum, "evaluated": result.evaluated, "summary": result.summary,
           "picks": result.picks}  # fmt: skip
    # default=str: a space table given from Python may hold values JSON has no type for
    return json.dumps(_plain(doc), indent=1, allow_nan=False, default=str) + "\n"


def markdown(
    summary: Sequence[dict[str, Any]], header: str, provenance: dict[str, Any] | None = None
) -> str:
    names, test = headers(summary), tested(summary)
    lines = [
        "# bitscout compare",
        "",
        header,
        "",
        "| " + " | ".join(names) + " |",
        "|" + "|".join("---" for _ in names) + "|",
        *("| " + " | ".join(cells(e, test)) + " |" for e in summary),
        "",
        CENSORED_NOTE,
        *budget_table(summary),
        *provenance_lines(provenance or {}),
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


def provenance_lines(p: dict[str, Any]) -> list[str]:
    """How to re-derive the table: the command, every option, the code and the model."""
    if not p:
        return []
    code = p.get("bitscout_version") or "unknown"
    if p.get("git_commit"):
        code += f", commit {p['git_commit']}" + (
            " (with local changes)" if p.get("git_dirty") else ""
        )
    options = ", ".join(f"{k} = {json.dumps(v)}" for k, v in p.get("options", {}).items())
    lines = ["", "## Provenance", "", f"- command: `{p.get('command')}`", f"- bitscout {code}",
             f"- options: {options}"]  # fmt: skip
    for key, what in (
        ("model", "float model"),
        ("data", "validation data"),
        ("test_data", "test data"),
    ):
        if p.get(key):
            lines.append(f"- {what}: " + ", ".join(f"{k} {v}" for k, v in p[key].items()))
    return lines


def _legend(entry: dict[str, Any]) -> str:
    """A strategy's median line, with its censored trials to the optimum where known."""
    if entry.get("never_optimum") is None:
        return f"{entry['strategy']}: median over seeds"
    return f"{entry['strategy']}: median (to optimum: {censored_cell(entry, 'optimum')} reached)"


def draw(path: Path, summary: Sequence[dict[str, Any]], optimum: float | None, title: str) -> None:
    """The distance to the optimum (else to the best any run found) against trials, on a
    log axis so the differences near it show: the median over seeds with its interquartile
    band. Without either, the best so far itself on a linear axis."""
    # The Figure API needs no pyplot and so leaves matplotlib's global backend alone;
    # imported here because matplotlib is slow to import and only this draws.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    gap = bool(summary) and summary[0].get("gap") is not None
    floor = math.inf
    for entry, hatch in zip(summary, HATCHES * len(summary), strict=False):
        shown = entry["gap"] if gap else entry["best_so_far"]
        x = np.arange(1, len(shown["median"]) + 1)
        (line,) = ax.plot(x, shown["median"], drawstyle="steps-post", label=_legend(entry))
        # a hatch of its own, so overlapping bands stay apart in print and for colour-blindness
        ax.fill_between(x, shown["q25"], shown["q75"], facecolor=line.get_color(), alpha=0.15,
                        hatch=hatch, edgecolor=line.get_color(), linewidth=0, step="post",
                        label=f"{entry['strategy']}: interquartile range")  # fmt: skip
        positive = [v for v in (*shown["q25"], *shown["median"]) if v > 0]  # NaN is not > 0
        floor = min(floor, *positive) if positive else floor
    if gap:
        # symlog: linear below the smallest distance drawn, so a run at the optimum (0) shows
        ax.set_yscale("symlog", linthresh=floor if math.isfinite(floor) else 1e-6)
        ylabel = "regret (distance to the optimum)" if optimum is not None else (
            "distance to the best any run found")  # fmt: skip
    else:
        ylabel = "best objective so far"
        if optimum is not None:
            ax.axhline(optimum, color="black", linestyle="--", linewidth=1, label="optimum")
    ax.set(xlabel="trial", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def show(console: Console, summary: Sequence[dict[str, Any]], header: str) -> None:
    table = Table(title="strategy comparison", caption=header, box=box.SIMPLE_HEAD)
    names = headers(summary)
    for i, name in enumerate(names):  # the strategy's name is never cut, headers wrap
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for entry in summary:
        table.add_row(*cells(entry, tested(summary)))
    console.print(table)
