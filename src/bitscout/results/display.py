"""The result of a search on the console, read in an 80-column terminal: the winners as
distinct configs, every metric that varies (with its unit), the float baseline and the change
from it, what is the same for every trial, and the test split."""

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from bitscout.objective import Objective
from bitscout.results.conclude import Concluded, changes
from bitscout.results.console import WIDTH, config_text, wrap_config
from bitscout.results.outputs import row_config
from bitscout.results.ranking import objective_columns, varying
from bitscout.results.stats import wilson_interval

CONFIG_IN_TABLE = 28  # longer configs go on their own line under the table


def _header(name: str, units: Mapping[str, str]) -> Text:
    unit = units.get(name)
    return Text(f"{name}\n[{unit}]" if unit else name)


def _number(value: Any, digits: int = 6) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}g}"


def _columns(c: Concluded, objective: Objective, names: Sequence[str]) -> tuple[list[str], dict]:
    order = list(dict.fromkeys([*objective.names, "accuracy", "loss", *names]))
    return varying(c.scored, order)


def _table(
    c: Concluded, objective: Objective, dims: Sequence[str], metrics: Sequence[str],
    units: Mapping[str, str], configs: bool,
) -> Table:  # fmt: skip
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("#", "trial", "trials", *(["config"] if configs else [])):
        table.add_column(name, justify="left" if name == "config" else "right")
    float_row = c.baseline.get("validation") or {}
    for m in metrics:
        table.add_column(_header(m, units), justify="right")
        if m in ("accuracy", "loss") and float_row:
            unit = "points" if m == "accuracy" else units.get(m, "")
            table.add_column(Text(f"Δ\n[{unit}]"), justify="right")
    cols = objective_columns(objective) if objective.single else []
    for col in cols:
        table.add_column(col, justify="right")
    for rank, row in enumerate(c.winners.to_dict("records"), start=1):
        cells = [str(rank), str(int(row["number"])), str(int(row["proposals"]))]
        cells += [config_text(row_config(row, dims))] if configs else []
        delta = changes(row, float_row)
        for m in metrics:
            cells.append(_number(row[m]))
            if m in ("accuracy", "loss") and float_row:
                key = "accuracy_points" if m == "accuracy" else "loss"
                cells.append(f"{delta[key]:+.2f}" if key in delta else "-")
        table.add_row(*cells, *(_number(row[col]) for col in cols))
    if float_row:
        cells = ["float", "", "", *([""] if configs else [])]
        for m in metrics:
            cells.append(_number(float_row.get(m)))
            cells += [""] if m in ("accuracy", "loss") else []
        table.add_row(*cells, *([""] * len(cols)), style="dim")
    return table


def _natural_width(console: Console, table: Table) -> int:
    """The width `table` takes when nothing is squeezed (rich clamps a measure to the
    console's width otherwise)."""
    options = console.options.update(max_width=10_000)
    return Measurement.get(console, options, table).maximum


def _fit(console: Console, build: Any, metrics: list[str]) -> tuple[Table, list[str]]:
    """The table with as many metric columns as fit the width, and the ones left over."""
    for keep in range(len(metrics), 0, -1):
        table = build(metrics[:keep])
        if _natural_width(console, table) <= WIDTH:
            return table, metrics[keep:]
    return build(metrics[:1]), metrics[1:]


def show_result(
    console: Console, c: Concluded, objective: Objective, dims: Sequence[str],
    units: Mapping[str, str], rows: int,
) -> None:  # fmt: skip
    """The winners, read in 80 columns."""
    if console.quiet:  # measuring the tables for nobody: 0.08 s after a search
        return
    if c.winners.empty:
        console.print("no feasible candidate found")
        return
    metrics, constant = _columns(c, objective, [m for m in c.scored if m in units])
    texts = [config_text(row_config(r, dims)) for r in c.winners.to_dict("records")]
    inline = max(map(len, texts)) <= CONFIG_IN_TABLE
    kind = "best distinct configs" if objective.single else "Pareto set (distinct configs)"
    console.print(f"{kind}, ranked on the validation split ({rows} rows):", highlight=False)
    wide = _natural_width(console, _table(c, objective, dims, metrics[:1], units, inline))
    inline = inline and wide <= WIDTH
    left, configs = metrics, inline
    while left:
        build = partial(_table, c, objective, dims, units=units, configs=configs)
        table, left = _fit(console, build, left)
        console.print(table)
        configs = False  # later tables are only more metrics
    if not inline:
        for rank, text in enumerate(texts, start=1):
            label = f"#{rank} "
            console.print(label + wrap_config(text, len(label), len(label)), highlight=False)
    if constant:
        same = ", ".join(f"{k} {_number(v)} [{units.get(k, '')}]" for k, v in constant.items())
        console.print(f"the same for every trial: {same}", highlight=False, markup=False)
    _show_test(console, c)
    best = c.winners.iloc[0]
    console.print(f"best config: {wrap_config(texts[0], 2, len('best config: '))}", highlight=False)
    score = ", ".join(_number(best[k]) for k in objective_columns(objective))
    console.print(f"best score: {score}", highlight=False)


def _show_test(console: Console, c: Concluded) -> None:
    if not c.test:
        return
    n = c.test["rows"]
    first = c.test["candidates"][0]["metrics"]
    parts = [f"#1 {_accuracy(first, n)}" if "accuracy" in first else ""]
    float_test = c.baseline.get("test") or {}
    if "accuracy" in float_test:
        parts.append(f"float {_accuracy(float_test, n)}")
    console.print(
        f"test split ({n} rows, evaluated once after the search; the configs were chosen on "
        f"validation): {', '.join(p for p in parts if p)}",
        highlight=False,
    )


def _accuracy(metrics: Mapping[str, float], n: int) -> str:
    acc = metrics["accuracy"]
    lo, hi = wilson_interval(round(acc * n), n)
    return f"accuracy {acc:.4f} (95% CI {lo:.4f}-{hi:.4f})"
