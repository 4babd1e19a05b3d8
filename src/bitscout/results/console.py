"""The console while a search runs, read in an 80-column terminal: a progress bar with an ETA
and one line per new best (every trial with `--verbose`, nothing with `--quiet`). The result
at the end is `display`'s."""

import io
import logging
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bitscout.objective import Objective, dominates
from bitscout.quant.space import Choice
from bitscout.results.trials import Result

Verbosity = Literal["quiet", "normal", "verbose"]
TENSOR_SHORT = {"data_in": "in", "weight": "w", "bias": "b", "accum": "acc", "result": "res"}
FIELD_SHORT = {"width": "", "frac_width": ".f", "exponent_width": ".e", "exponent_bias": ".eb",
               "block_size": ".blk", "bipolar": ".bip", "stochastic": ".st",
               "scaling_factor": ".sc"}  # fmt: skip
LAYER_SHORT = {"name": "q", "rounding": "rnd", "overflow": "ovf"}
WIDTH = 80
LOGGER = "bitscout"  # the library's informational lines, at INFO


class _LogLines(io.StringIO):
    """A text file that hands each finished line to a logger, so a library search prints
    nothing unless the application asked for bitscout's log."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.pending = ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.logger.info(line.rstrip())
        return len(text)


def log_console() -> Console:
    """A console whose lines go to the "bitscout" logger at INFO; when no handler would take
    them, a quiet one (nothing is even rendered)."""
    logger = logging.getLogger(LOGGER)
    if not logger.isEnabledFor(logging.INFO):
        return Console(quiet=True)
    return Console(
        file=_LogLines(logger), width=WIDTH, force_terminal=False, color_system=None, soft_wrap=True
    )  # one record per line printed


def short(field: str) -> str:
    """`weight_exponent_width` -> `w.e`; unknown fields stay as they are."""
    if field in LAYER_SHORT:
        return LAYER_SHORT[field]
    for tensor, t in TENSOR_SHORT.items():
        rest = field.removeprefix(f"{tensor}_")
        if rest != field and rest in FIELD_SHORT:
            return t + FIELD_SHORT[rest]
    return field


def config_text(config: Mapping[str, Choice]) -> str:
    """Compact form: `seq_blocks_2(in=8 w=4 b=8)`."""
    layers: dict[str, list[str]] = {}
    for name, value in config.items():
        layer, _, field = name.rpartition("/")
        layers.setdefault(layer, []).append(f"{short(field)}={value}")
    return " ".join(f"{k}({' '.join(v)})" for k, v in layers.items()) or "(no dimensions)"


def wrap_config(text: str, indent: int, first: int = 0) -> str:
    """`text` in lines of at most WIDTH columns, broken between layers, never inside one (a
    terminal would break `seq_blocks_4(in=8 w=2)` at its space); `first` columns of the first
    line are already used, later lines start `indent` spaces in."""
    lines: list[list[str]] = [[]]
    used = first
    for layer in re.split(r"(?<=\)) ", text):
        if lines[-1] and used + 1 + len(layer) > WIDTH:
            lines.append([])
            used = indent
        used += len(layer) + bool(lines[-1])
        lines[-1].append(layer)
    return ("\n" + " " * indent).join(" ".join(line) for line in lines)


class Reporter:
    """Shows a search as its trials arrive: a progress bar with the best so far and an ETA,
    one line per new best (per new Pareto point), every trial when verbose."""

    def __init__(
        self, console: Console, total: int, objective: Objective, verbosity: Verbosity = "normal"
    ) -> None:
        self.console, self.objective, self.verbosity = console, objective, verbosity
        self.best: float | None = None
        self.front: list[list[float]] = []
        self.progress = Progress(
            TextColumn("search"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.description}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=True, disable=verbosity == "quiet",
        )  # fmt: skip
        self.task = self.progress.add_task("", total=total)

    def __enter__(self) -> "Reporter":
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def __call__(self, number: int, config: Mapping[str, Choice], result: Result) -> None:
        news = self._news(result)
        if self.verbosity == "verbose" or (news and self.verbosity == "normal"):
            self.console.print(self._line(number, config, result, news), highlight=False)
        best = "" if self.best is None else f"best {self.best:.6g}"
        self.progress.update(self.task, advance=1, description=best)

    def _news(self, result: Result) -> str:
        """'new best' / 'new Pareto point' when this result is one, else ''."""
        if result.failure is not None or not result.feasible or result.pruned:
            return ""  # a pruned candidate's score is that of a shorter training: never a best
        if self.objective.single:
            value = result.values[0]
            if self.best is None or self.objective.better(value, self.best):
                self.best = value
                return "new best"
            return ""
        directions = self.objective.directions
        if any(dominates(p, result.values, directions) or p == result.values for p in self.front):
            return ""
        self.front = [p for p in self.front if not dominates(result.values, p, directions)]
        self.front.append(list(result.values))
        return "new Pareto point"

    def _line(self, number: int, config: Mapping[str, Choice], result: Result, news: str) -> str:
        if result.failure is not None:
            return f"trial {number} failed: {result.failure}"
        values = ", ".join(f"{v:.6g}" for v in result.values)
        flags = (" (cached)" if result.cached else "") + ("" if result.feasible else " infeasible")
        flags += f" pruned after {result.epochs} epochs" if result.pruned else ""
        head = f"{news + ': ' if news else ''}trial {number}  score {values}{flags}"
        text = config_text(config)
        if len(head) + len(text) + 2 <= WIDTH:
            return f"{head}  {text}"
        return f"{head}\n  {wrap_config(text, indent=2, first=2)}"
