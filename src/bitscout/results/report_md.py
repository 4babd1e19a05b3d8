"""`bitscout report DIR`: tables from report.py, pictures from plots.py, one report.md."""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bitscout.files import write_text
from bitscout.results import plots
from bitscout.results.console import config_text
from bitscout.results.report import (
    Run,
    best_so_far,
    objective_columns,
    rescore,
    wilson_interval,
    winners,
)  # fmt: skip
from bitscout.study.objective import Objective

ALWAYS_PLOTTED = ("latency", "model_size", "flops")


def _labels(df: pd.DataFrame, dims: list[str]) -> list[str]:
    return [config_text({d: row[d] for d in dims}) for row in df.to_dict("records")]


def draw(df: pd.DataFrame, run: Run, objective: Objective, plot_dir: Path) -> list[Path]:
    """Every picture of one (re)scored run; returns the files written."""
    shown = [m for m in dict.fromkeys([*objective.names, *ALWAYS_PLOTTED]) if m in df]
    files = [plots.metrics_png(df, shown, _labels(df, run.dimensions), plot_dir / "metrics.png")]
    col = objective_columns(objective)[0]
    if objective.single:
        best = best_so_far(df[col].to_numpy(), df["feasible"].to_numpy(), objective.direction)
        files.append(
            plots.best_so_far_png(
                np.arange(1, len(df) + 1),
                df[col].to_numpy(),
                best,
                col,
                plot_dir / "best_so_far.png",
            )
        )
    else:
        front = df["number"].isin(winners(df, objective)["number"]).to_numpy()
        x, y = objective.names[:2] if len(objective.names) > 1 else (objective.names[0],) * 2
        files.append(plots.pareto_png(df, x, y, front, plot_dir / "pareto.png"))
    if 1 <= len(run.dimensions) <= 2:
        files.append(
            plots.heatmap_png(heat_grid(df, run.dimensions, col), col, plot_dir / "heatmap.png")
        )
    return files


def heat_grid(df: pd.DataFrame, dims: list[str], col: str) -> pd.DataFrame:
    """The objective over the choices of one or two dimensions."""
    if len(dims) == 1:
        return df.groupby(dims[0])[col].mean().to_frame(col)
    return df.pivot_table(index=dims[0], columns=dims[1], values=col, aggfunc="mean")


def _accuracy_cell(row: dict[str, Any], n: int) -> str:
    acc = row["accuracy"]
    lo, hi = wilson_interval(round(acc * n), n)
    return f"{acc:.4f} (n={n}, 95% CI {lo:.4f}-{hi:.4f})"


def top_table(best: pd.DataFrame, run: Run, objective: Objective) -> str:
    """The winners as a Markdown table; accuracy with its sample count and Wilson interval."""
    metrics = [m for m in dict.fromkeys([*objective.names, "accuracy"]) if m in best]
    cols = objective_columns(objective)
    lines = [
        "| rank | trial | config | " + " | ".join(metrics + cols) + " |",
        "|---" * (3 + len(metrics) + len(cols)) + "|",
    ]
    n = int(run.summary["eval_samples"])
    for rank, row in enumerate(best.to_dict("records"), start=1):
        cells = [_accuracy_cell(row, n) if m == "accuracy" else f"{row[m]:.6g}" for m in metrics]
        cells += [f"{row[c]:.6g}" for c in cols]
        config = config_text({d: row[d] for d in run.dimensions})
        lines.append(f"| {rank} | {int(row['number'])} | {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _source(source: Any) -> str:
    """Where the float model came from: trained here, a checkpoint (path and SHA-256), ..."""
    if isinstance(source, dict):
        return f"checkpoint {source.get('path')} (SHA-256 {source.get('sha256')})"
    return {"trained": "trained by this search", None: "not recorded"}.get(source, str(source))


def _setup(run: Run, objective: Objective) -> str:
    s = run.summary
    terms = " + ".join(f"{m.scale:g} * {m.name}" for m in objective.metrics)
    goal = (
        f"{objective.direction} {terms}"
        if objective.single
        else "Pareto front of " + ", ".join(f"{m.name} ({m.direction})" for m in objective.metrics)
    )
    rows = [
        ("config", s.get("config")),
        ("model", s["model"]),
        ("dataset", s["dataset"]),
        ("float model", _source(s.get("model_source"))),
        ("strategy", s["strategy"] + (f" / {s['sampler']}" if s.get("sampler") else "")),
        ("seed", s["seed"]),
        ("space size", s["space_size"]),
        ("trials", s["trials_total"]),
        ("distinct configs", s["unique_configs"]),
        ("failed", s["failed"]),
        ("evaluation samples", s["eval_samples"]),
        ("objective", goal),
        ("constraints", ", ".join(map(str, objective.constraints)) or "none"),
        ("search time", f"{s['wall_s']:.2f} s"),
    ]
    return "\n".join(["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def write_report(
    run: Run, objective: Objective, out: Path, title: str, *, tables: bool = False
) -> Path:
    """Write `out/report.md` and `out/plots/*.png`; with `tables` (a re-ranking) also
    `ranked.csv` (every trial rescored) and, when multi-objective, `pareto.csv`."""
    df = rescore(run.trials, objective)
    best = winners(df, objective)
    pictures = draw(df, run, objective, out / "plots")
    heading = "Top candidates" if objective.single else "Pareto set"
    parts = [
        f"# {title}",
        "## Setup",
        _setup(run, objective),
        f"## {heading}",
        top_table(best, run, objective) if len(best) else "No feasible candidate.",
        "## Plots",
    ] + [f"![{p.stem}](plots/{p.name})" for p in pictures]
    out.mkdir(parents=True, exist_ok=True)
    if tables:
        write_text(out / "ranked.csv", df.to_csv(index=False, lineterminator="\n"))
        if not objective.single:
            write_text(out / "pareto.csv", best.to_csv(index=False, lineterminator="\n"))
    path = out / "report.md"
    write_text(path, "\n\n".join(parts) + "\n")
    return path
