"""`bitscout sensitivity`'s results: the ranking of layers, the heatmap's grids, the files, the
report section and the console table. Tables are computed here; sensitivity_plot draws."""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich import box
from rich.table import Table

from bitscout._core.files import SCHEMA_VERSION, output_dir, write_text

if TYPE_CHECKING:  # the report reads these files without importing the evaluator
    from bitscout.evaluate.hessian import HessianTrace

FLOAT_ROW = "float"  # sensitivity.csv's first row: the float model, every layer float
CSV, RANKING, JSON, PNG, REPORT = (
    "sensitivity.csv", "sensitivity_ranking.csv", "sensitivity.json", "sensitivity.png",
    "report.md",
)  # fmt: skip
HEADING = "## Sensitivity"


@dataclass
class SensitivityResult:
    """What `bitscout.sensitivity` measured.

    Attributes:
        table: sensitivity.csv's rows: the float model first, then one row per probe (one
            choice of one dimension applied alone, the rest float) with its metrics and its
            accuracy drop and loss increase against the float model.
        ranking: sensitivity_ranking.csv's rows: the layer keys, most sensitive first (by the
            largest accuracy drop of any of their probes, ties by the largest loss increase).
        float_metrics: the float model's metrics on the same rows, name -> value.
        units: each metric's unit, name -> unit (as the tables' headers show it).
        rows: the validation rows measured on.
        hessian_samples: the Rademacher samples of each Hessian trace (0: none estimated).
        seed: the seed of the Hessian samples.
        wall_s: the seconds the measurement took.
        out: where the files went; None: nowhere.
        details: what the CLI records besides (the config, the model's source).
    """

    table: pd.DataFrame
    ranking: pd.DataFrame
    float_metrics: dict[str, float]
    units: dict[str, str]
    rows: int
    hessian_samples: int
    seed: int
    wall_s: float
    out: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)  # config, model source (CLI)


def probe_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["layer"] != FLOAT_ROW]


def ranking(table: pd.DataFrame, traces: Mapping[str, "HessianTrace"]) -> pd.DataFrame:
    """Layer keys, most sensitive first: by the largest accuracy drop of any of their probes,
    ties broken by the largest loss increase; model order among equals."""
    groups = probe_rows(table).groupby("layer", sort=False)
    frame = groups.size().rename("probes").to_frame()
    keys = []
    for column, name in (("accuracy_drop", "max_accuracy_drop"),
                         ("loss_increase", "max_loss_increase")):  # fmt: skip
        if column in table:
            frame[name] = groups[column].max()
            keys.append(name)
    nan = float("nan")
    frame["hessian_trace"] = [traces[k].trace if k in traces else nan for k in frame.index]
    frame["hessian_trace_per_weight"] = [traces[k].per_weight if k in traces else nan
                                         for k in frame.index]  # fmt: skip
    frame["weights"] = [traces[k].weights if k in traces else pd.NA for k in frame.index]
    frame = frame.sort_values(keys, ascending=False, kind="stable").rename_axis("layer")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index()[["rank", "layer", *frame.columns.drop("rank")]]


def _suffix(dimension: str, tensor: str) -> str:
    """`seq_blocks_0/weight_frac_width` -> `frac_width`: the field, whatever the tensor."""
    name = dimension.rpartition("/")[2]
    return name.removeprefix(f"{tensor}_")


def _columns(choices: pd.Series) -> list[Any]:
    """Numbers ascending, then text ("NA", format names) in the order the space lists it."""
    seen = list(dict.fromkeys(choices))
    return sorted(seen, key=lambda c: (1, seen.index(c)) if isinstance(c, str) else (0, c))


def shown_value(table: pd.DataFrame) -> tuple[str, pd.Series]:
    """What the heatmap colours: accuracy drop in points, else the loss increase."""
    if "accuracy_drop" in table:
        return "accuracy drop [points] (float - probe)", table["accuracy_drop"] * 100
    return "loss increase [nats] (probe - float)", table["loss_increase"]


def heat_grids(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One grid per field (width, frac_width, name, ...): rows `layer tensor`, columns the
    choices, cells the shown value. A field probed under several formats gets them named."""
    probes = probe_rows(table).copy()
    probes["value"] = shown_value(probes)[1]
    probes["field"] = [_suffix(d, t) for d, t in zip(probes["dimension"], probes["tensor"],
                                                     strict=True)]  # fmt: skip
    grids = []
    for name, part in probes.groupby("field", sort=False):
        # A format choice is the column itself; a field under several formats needs them named.
        several = name != "name" and part.groupby(["layer", "tensor"])["format"].nunique().max() > 1
        labels = [f"{lay} {ten}" + (f" ({fmt})" if several else "")
                  for lay, ten, fmt in zip(part["layer"], part["tensor"], part["format"],
                                           strict=True)]  # fmt: skip
        columns = _columns(part["choice"])
        grid = pd.DataFrame(math.nan, index=list(dict.fromkeys(labels)),
                            columns=[str(c) for c in columns])  # fmt: skip
        for label, choice, value in zip(labels, part["choice"], part["value"], strict=True):
            grid.loc[label, str(choice)] = value
        grids.append((str(name), grid))
    return grids


def _csv(path: Path, frame: pd.DataFrame) -> None:
    frame = frame.copy()
    frame.insert(0, "schema_version", SCHEMA_VERSION)
    write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def write_outputs(result: SensitivityResult, out: Path, command: str) -> Path:
    """sensitivity.csv, sensitivity_ranking.csv, sensitivity.json, sensitivity.png and the
    report's section (a new report.md, or the section replaced in a run's own)."""
    from bitscout.results.sensitivity_plot import sensitivity_png  # matplotlib: when drawing

    output_dir(out, "out").mkdir(parents=True, exist_ok=True)
    _csv(out / CSV, result.table)
    _csv(out / RANKING, result.ranking)
    summary = {"schema_version": SCHEMA_VERSION, "command": command, **result.details,
               "rows": result.rows, "probes": len(probe_rows(result.table)),
               "float": result.float_metrics, "metric_units": result.units,
               "hessian_samples": result.hessian_samples, "seed": result.seed,
               "wall_s": result.wall_s}  # fmt: skip
    write_text(out / JSON, json.dumps(summary, indent=2, default=str) + "\n")
    label, _ = shown_value(result.table)
    sensitivity_png(heat_grids(result.table), label, out / PNG)
    update_report(out)
    return out


def _cell(value: Any, digits: str = ".4g") -> str:
    return "-" if value is None or pd.isna(value) else format(value, digits)


def _ranking_lines(frame: pd.DataFrame) -> list[str]:
    """The ranking as a Markdown table (Hessian columns only when they were estimated)."""
    drop = "max_accuracy_drop" in frame
    hessian = bool(frame["hessian_trace"].notna().any())
    heads = ["rank", "layer", "probes", *(["max accuracy drop [points]"] if drop else []),
             "max loss increase [nats]", *(["Hessian trace", "trace per weight"] if hessian
                                           else [])]  # fmt: skip
    lines = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    for row in frame.to_dict("records"):
        lines.append("| " + " | ".join(_ranking_cells(row, drop, hessian)) + " |")
    return lines


def _ranking_cells(row: Mapping[str, Any], drop: bool, hessian: bool) -> list[str]:
    """One layer's ranking row as text, for report.md and the console alike."""
    cells = [str(row["rank"]), str(row["layer"]), str(row["probes"])]
    cells += [_cell(row["max_accuracy_drop"] * 100, ".2f")] if drop else []
    cells.append(_cell(row["max_loss_increase"]))
    if hessian:
        cells += [_cell(row["hessian_trace"]), _cell(row["hessian_trace_per_weight"])]
    return cells


def _float_text(summary: Mapping[str, Any]) -> str:
    units = summary.get("metric_units", {})
    return ", ".join(f"{k} {_cell(v, '.6g')} [{units.get(k, '')}]"
                     for k, v in summary.get("float", {}).items())  # fmt: skip


def sensitivity_section(out: Path) -> list[str]:
    """The report's "Sensitivity" section from the files in `out` (none there: nothing), so
    that `bitscout report` rewriting a run's report.md keeps it."""
    try:
        summary = json.loads((out / JSON).read_text())
        frame = pd.read_csv(out / RANKING).drop(columns="schema_version")
    except (OSError, ValueError):
        return []
    samples = summary.get("hessian_samples", 0)
    hessian = (f"Hessian trace: Hutchinson's estimate of the trace of the Hessian of the mean "
               f"loss w.r.t. the layer's weights, from {samples} Rademacher vectors (seed "
               f"{summary.get('seed')}); per weight: HAWQ-v2's average trace." if samples else
               "Hessian traces were not estimated (`--hessian N` estimates them).")  # fmt: skip
    body = [
        f"`{summary.get('command')}`: every choice of every searched dimension applied alone "
        f"to its tensor, every other tensor and layer float, on {summary.get('rows')} "
        f"validation rows: {summary.get('probes')} probes (the sum of the choices), "
        f"{summary.get('wall_s', 0):.2f} s. Float model: {_float_text(summary)}.", "",
        *_ranking_lines(frame), "",
        "Layers are ranked by the largest accuracy drop of any of their probes (ties: the "
        f"largest loss increase). {hessian}", "",
        f"![sensitivity]({PNG})", "",
        f"Every probe with its metrics: `{CSV}`; the ranking: `{RANKING}`.",
    ]  # fmt: skip
    return [HEADING, "\n".join(body)]


def update_report(out: Path) -> Path:
    """Put the section into `out/report.md`: replacing its earlier version, else before a
    search report's plots, else at the end; a new report when there is none."""
    path = out / REPORT
    section = "\n\n".join(sensitivity_section(out))
    if not path.is_file():
        write_text(path, f"# bitscout sensitivity: {out.name}\n\n{section}\n")
        return path
    text = path.read_text(encoding="utf-8")
    start = text.find(f"\n{HEADING}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[: start + 1] + section + ("\n\n" + rest if rest else "\n")
    else:
        plots = text.find("\n## Plots\n")
        if plots >= 0:
            text = text[: plots + 1] + section + "\n\n" + text[plots + 1 :]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
    write_text(path, text)
    return path


def console_table(result: SensitivityResult) -> Table:
    """The ranking in 80 columns."""
    frame = result.ranking
    table = Table(title=f"layers by sensitivity ({result.rows} validation rows)",
                  box=box.SIMPLE_HEAD)  # fmt: skip
    table.add_column("#", justify="right")
    table.add_column("layer", overflow="fold")
    table.add_column("probes", justify="right")
    drop = "max_accuracy_drop" in frame
    if drop:
        table.add_column("max acc. drop\n\\[points]", justify="right")
    table.add_column("max loss incr.\n\\[nats]", justify="right")
    hessian = bool(frame["hessian_trace"].notna().any())
    if hessian:
        table.add_column("Hessian\ntrace", justify="right")
        table.add_column("trace per\nweight", justify="right")
    for row in frame.to_dict("records"):
        table.add_row(*_ranking_cells(row, drop, hessian))
    return table
