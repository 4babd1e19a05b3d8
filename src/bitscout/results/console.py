"""Live console output of a search: one line per trial and a progress bar with the best."""

from collections.abc import Mapping
from types import TracebackType

from optuna.trial import FrozenTrial
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bitscout.quant.space import Choice
from bitscout.results.outputs import ranked
from bitscout.study.objective import Objective
from bitscout.study.store import Result

SHORT = {"name": "q", "data_in_width": "in", "data_in_frac_width": "in.f", "weight_width": "w",
         "weight_frac_width": "w.f", "bias_width": "b", "bias_frac_width": "b.f",
         "rounding": "rnd", "overflow": "ovf"}  # fmt: skip


def config_text(config: Mapping[str, Choice]) -> str:
    """Compact form for the console: `seq_blocks_2(in=8 w=4 b=8)`."""
    layers: dict[str, list[str]] = {}
    for name, value in config.items():
        layer, _, field = name.rpartition("/")
        layers.setdefault(layer, []).append(f"{SHORT.get(field, field)}={value}")
    return " ".join(f"{k}({' '.join(v)})" for k, v in layers.items()) or "(no dimensions)"


class Reporter:
    """Prints each trial's score as it arrives and keeps the best feasible one in view."""

    def __init__(self, console: Console, total: int, objective: Objective) -> None:
        self.console = console
        self.objective = objective
        self.best: float | None = None
        self.progress = Progress(
            TextColumn("search"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("", total=total)

    def __enter__(self) -> "Reporter":
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def __call__(self, number: int, config: Mapping[str, Choice], result: Result) -> None:
        if result.failure is not None:
            self.console.print(
                f"trial {number:>4}  {config_text(config)}  failed: {result.failure}",
                highlight=False,
            )
            self.progress.update(self.task, advance=1)
            return
        values = ", ".join(f"{v:.6g}" for v in result.values)
        flags = (" (cached)" if result.cached else "") + ("" if result.feasible else " infeasible")
        self.console.print(
            f"trial {number:>4}  {config_text(config)}  score {values}{flags}", highlight=False
        )
        if self.objective.single and result.feasible:
            value = result.values[0]
            if self.best is None or self.objective.better(value, self.best):
                self.best = value
        best = "" if self.best is None else f"best {self.best:.6g}"
        self.progress.update(self.task, advance=1, description=best)


def show_best(console: Console, objective: Objective, done: list[FrozenTrial]) -> None:
    """The best candidates (or the Pareto set), the best config and its score."""
    rows = ranked(done, objective, top=10)
    if not rows:
        console.print("no feasible candidate found")
        return
    title = "best candidates" if objective.single else "Pareto set"
    table = Table(title=title)
    table.add_column("trial", justify="right")
    table.add_column("config")
    for m in objective.names:
        table.add_column(m, justify="right")
    table.add_column("objective", justify="right")
    for t in rows:
        metrics = t.user_attrs["metrics"]
        table.add_row(
            str(t.number),
            config_text(t.params),
            *[f"{metrics[m]:.6g}" for m in objective.names],
            ", ".join(f"{v:.6g}" for v in t.values),
        )
    console.print(table)
    best = rows[0]
    console.print(f"best config: {config_text(best.params)}")
    console.print(f"best score: {', '.join(f'{v:.6g}' for v in best.values)}")
