"""report.md and its pictures, from the ranked trials (tables first, then plots.py draws)."""

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bitscout._core.files import write_text
from bitscout.objective import Objective, pareto_front
from bitscout.results import plots
from bitscout.results.conclude import Concluded, changes
from bitscout.results.console import config_text
from bitscout.results.forked import Picture, drawn
from bitscout.results.outputs import row_config, write_best_toml, write_pareto_csv
from bitscout.results.ranking import (
    best_so_far,
    objective_columns,
    param_importances,
    rescore,
    varying,
    winners,
)
from bitscout.results.report import Run, load_run
from bitscout.results.sensitivity import sensitivity_section
from bitscout.results.stats import wilson_interval
from bitscout.results.surrogate import fit_text

COSTS = ("average_bitwidth", "bops")  # what accuracy is traded against in tradeoff.png


def concluded(run: Run, objective: Objective) -> Concluded:
    """A run directory's trials ranked under `objective`. The test split was evaluated for the
    search's own winners; a re-ranking's winners have no test figures."""
    scored = rescore(run.trials, objective)
    same = objective == run.objective
    baseline = run.summary.get("float") or {"validation": None, "test": None}
    test = run.summary.get("test") if same else None
    counts = run.trials["state"].value_counts().to_dict()
    return Concluded(run.trials, scored, winners(scored, objective, run.dimensions), baseline,
                     test, counts)  # fmt: skip


def _front(df: pd.DataFrame, cost: str) -> np.ndarray:
    points = df[["accuracy", cost]].to_numpy().tolist()
    mask = np.zeros(len(df), dtype=bool)
    mask[pareto_front(points, ["maximize", "minimize"])] = True
    return mask


def draw(c: Concluded, run: Run, objective: Objective, plot_dir: Path) -> list[Path]:
    """Every picture of one (re)scored run; returns the files written."""
    df, units, dims = c.scored, run.summary.get("metric_units", {}), run.dimensions
    changing, _ = varying(df, [m for m in units if m in df])
    pictures: list[Picture] = []

    def add(name: str, draw: Callable[[Path], Path]) -> None:
        pictures.append((plot_dir / name, draw))

    if changing:
        add("metrics.png", partial(plots.metrics_png, df, changing, units))
    col = objective_columns(objective)[0]
    if objective.single:
        best = best_so_far(df[col].to_numpy(), df["feasible"].to_numpy(), objective.direction)
        add(
            "best_so_far.png", partial(plots.best_so_far_png, df[col].to_numpy(), best, "objective")
        )
    else:
        front = df["number"].isin(c.winners["number"]).to_numpy()
        x, y = objective.names[:2] if len(objective.names) > 1 else (objective.names[0],) * 2
        add("pareto.png", partial(plots.pareto_png, df, x, y, front, units))
    costs = [k for k in COSTS if k in changing]
    if "accuracy" in df and costs:
        fronts = {k: _front(df, k) for k in costs}
        add("tradeoff.png", partial(plots.tradeoff_png, df, costs, fronts,
                                    c.baseline.get("validation"), units))  # fmt: skip
    importances = param_importances(df, dims, objective)
    if importances:
        add("importances.png", partial(plots.importances_png, importances))
    if 1 <= len(dims) <= 2:
        grids = [(heat_grid(df, dims, col), col)]
        grids += [(heat_grid(df, dims, "accuracy"), "accuracy")] if "accuracy" in df else []
        if grids[0][0].size:  # empty when no trial sets every dimension (a skipped field)
            add("heatmap.png", partial(plots.heatmap_png, grids))
    return drawn(pictures)


def heat_grid(df: pd.DataFrame, dims: list[str], col: str) -> pd.DataFrame:
    """A value over the choices of one or two dimensions."""
    if len(dims) == 1:
        return df.groupby(dims[0])[col].mean().to_frame(col)
    return df.pivot_table(index=dims[0], columns=dims[1], values=col, aggfunc="mean")


def _number(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.6g}"


def _accuracy(acc: float, n: int) -> str:
    lo, hi = wilson_interval(round(acc * n), n)
    return f"{acc:.4f} ({lo:.4f}-{hi:.4f})"


def top_table(c: Concluded, run: Run, objective: Objective) -> str:
    """The winners as a Markdown table: every metric that varies, accuracy with its 95% Wilson
    interval, the change from float, and the float model's own row."""
    units = run.summary.get("metric_units", {})
    metrics, _ = varying(c.scored, list(dict.fromkeys([*objective.names, "accuracy", "loss",
                                                       *units])))  # fmt: skip
    n = int(run.summary["eval_samples"])
    float_row = c.baseline.get("validation") or {}
    cols = objective_columns(objective)
    heads = [plots.label(m, units) for m in metrics]
    extra = ["Δ accuracy [points]", "Δ loss"] if float_row else []
    lines = ["| rank | trial | trials | config | " + " | ".join(heads + extra + cols) + " |",
             "|---" * (4 + len(heads) + len(extra) + len(cols)) + "|"]  # fmt: skip
    for rank, row in enumerate(c.winners.to_dict("records"), start=1):
        cells = [_accuracy(row[m], n) if m == "accuracy" else _number(row[m]) for m in metrics]
        delta = changes(row, float_row)
        cells += [f"{delta.get('accuracy_points', float('nan')):+.2f}",
                  f"{delta.get('loss', float('nan')):+.4g}"] if float_row else []  # fmt: skip
        cells += [_number(row[col]) for col in cols]
        config = config_text(row_config(row, run.dimensions))
        lines.append(f"| {rank} | {int(row['number'])} | {int(row['proposals'])} | {config} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    if float_row:
        cells = [_accuracy(float_row[m], n) if m == "accuracy" else _number(float_row.get(m))
                 for m in metrics]  # fmt: skip
        lines.append("| float | | | every layer float | " + " | ".join(cells)
                     + " |" * (len(extra) + len(cols)) + " |")  # fmt: skip
    return "\n".join(lines)


def test_section(c: Concluded, run: Run) -> str:
    if not c.test:
        return "No test split was evaluated (the data has none, or this is a re-ranking)."
    n_val, n_test = int(run.summary["eval_samples"]), int(c.test["rows"])
    lines = [
        f"The configs were chosen on the validation split ({n_val} rows). The test split "
        f"({n_test} rows) was evaluated once, after the search, for the winners below "
        "(accuracy with its 95% Wilson interval):",
        "",
        "| rank | trial | validation accuracy | test accuracy | test loss |",
        "|---|---|---|---|---|",
    ]
    val = {int(r["number"]): r for r in c.winners.to_dict("records")}
    for rank, cand in enumerate(c.test["candidates"], start=1):
        m, v = cand["metrics"], val.get(cand["number"], {})
        acc = _accuracy(m["accuracy"], n_test) if "accuracy" in m else "-"
        vacc = _accuracy(v["accuracy"], n_val) if "accuracy" in v else "-"
        lines.append(f"| {rank} | {cand['number']} | {vacc} | {acc} | {_number(m.get('loss'))} |")
    test_float = c.baseline.get("test") or {}
    val_float = c.baseline.get("validation") or {}
    if "accuracy" in test_float:
        lines.append(f"| float | | {_accuracy(val_float['accuracy'], n_val)} | "
                     f"{_accuracy(test_float['accuracy'], n_test)} | "
                     f"{_number(test_float.get('loss'))} |")  # fmt: skip
    return "\n".join(lines)


def _source(source: Any) -> str:
    """Where the float model came from: trained here, a checkpoint (path and SHA-256), ..."""
    if isinstance(source, dict):
        trained = "trained by this search: " if source.get("trained") else ""
        return f"{trained}checkpoint {source.get('path')} (SHA-256 {source.get('sha256')})"
    return {"trained": "trained by this search", None: "not recorded"}.get(source, str(source))


def _audit(audit: dict[str, Any]) -> str:
    """summary.json's `audit` in words: how many candidates the plain path re-derived."""
    if audit.get("engine") == "plain":
        return "none needed: every candidate was scored by the plain path (the model's forward)"
    if not audit["rate"]:
        return "off (audit_rate = 0): the fast engine's figures were not re-derived"
    n, matched = audit["rederived"], audit["matched"]
    verdict = f"all {n} matched" if matched == n else f"{n - matched} of {n} did not match"
    sample = f"the first 2, then 1 in {1 / audit['rate']:g}, seeded"
    scored = f"{n} of the {audit['scored']} candidates the fast engine scored"
    return f"{scored} re-derived by the plain path ({sample}): {verdict}"


def _setup(run: Run, objective: Objective, c: Concluded) -> str:
    s = run.summary
    terms = " + ".join(f"{m.scale:g} * {m.name}" for m in objective.metrics)
    goal = (
        f"{objective.direction} {terms}"
        if objective.single
        else "Pareto front of " + ", ".join(f"{m.name} ({m.direction})" for m in objective.metrics)
    )
    units = s.get("metric_units", {})
    _, constant = varying(c.scored, [m for m in units if m in c.scored])
    rows = [
        ("config", s.get("config")), ("model", s["model"]), ("dataset", s["dataset"]),
        ("float model", _source(s.get("model_source"))),
        ("strategy", s["strategy"] + (f" / {s['sampler']}" if s.get("sampler") else "")),
        ("seed", s["seed"]), ("space size", s["space_size"]), ("trials", s["trials_total"]),
        ("distinct configs", s["unique_configs"]), ("failed", s["failed"]),
        ("evaluation samples", s["eval_samples"]), ("objective", goal),
        ("constraints", ", ".join(map(str, objective.constraints)) or "none"),
        ("the same for every trial", ", ".join(f"{k} {_number(v)} [{units.get(k, '')}]"
                                              for k, v in constant.items()) or "-"),
        ("search time", f"{s['wall_s']:.2f} s"),
        *([("audit", _audit(s["audit"]))] if s.get("audit") else []),
        *([("ilp surrogate", fit_text(s["ilp_fit"]))] if s.get("ilp_fit") else []),
    ]  # fmt: skip
    return "\n".join(["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def write_report(
    run: Run, objective: Objective, out: Path, title: str, *, tables: bool = False
) -> Path:
    """Write `out/report.md` and `out/plots/*.png`; with `tables` (a re-ranking) also
    `ranked.csv` (every trial rescored), `best.toml` and, multi-objective, `pareto.csv`."""
    with plots.gc_paused(), plots.written_behind():
        c = concluded(run, objective)
        pictures = draw(c, run, objective, out / "plots")
    heading = "Best distinct configs" if objective.single else "Pareto set (distinct configs)"
    parts = [
        f"# {title}", "## Setup", _setup(run, objective, c), f"## {heading}",
        top_table(c, run, objective) if len(c.winners) else "No feasible candidate.",
        "## Test split", test_section(c, run), *verification_section(out),
        *finetune_section(out), *sensitivity_section(out), "## Plots",
    ] + [f"![{p.stem}](plots/{p.name})" for p in pictures]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    if tables:
        write_text(out / "ranked.csv", c.scored.to_csv(index=False, lineterminator="\n"))
        space = run.space()
        if space is not None and len(c.winners):
            write_best_toml(out / "best.toml", space, c.winners.iloc[0].to_dict())
        if not objective.single:
            names = list(run.summary.get("metric_units", {}))
            write_pareto_csv(out / "pareto.csv", c.winners, run.dimensions, names)
    path = out / "report.md"
    write_text(path, "\n\n".join(parts) + "\n")
    return path


VERIFY_FILE = "hls4ml_verify.json"


def verification_section(out: Path) -> list[str]:
    """The hls4ml check of the best config (`bitscout export DIR --to hls4ml --verify`)."""
    path = out / VERIFY_FILE
    if not path.is_file():
        return []
    found = json.loads(path.read_text())
    rows = [f"| {e['layer']} | {e['max_abs_difference']:.3g} |" for e in found["layers"]]
    floats = ", ".join(found["float_nodes"]) or "none"
    return [
        "## Hardware check (hls4ml)",
        "\n".join([
            f"`bitscout export {out} --to hls4ml --verify`: hls4ml {found['hls4ml']}'s C++ "
            f"emulation of best.toml against bitscout on {found['rows']} validation rows.", "",
            "| quantized layer | max abs difference, same layer input |", "|---|---|", *rows, "",
            f"End to end the top class agrees on {found['top_class_agreement']:.2%} of rows; the "
            f"largest logit difference is {found['max_logit_difference']:.3g}. Computed in float "
            f"by bitscout and in wide fixed point by hls4ml: {floats}.",
        ]),
    ]  # fmt: skip


def add_verification(run_dir: Path, found: dict[str, Any]) -> Path:
    """Keep the check beside the run and rewrite its report with it."""
    write_text(run_dir / VERIFY_FILE, json.dumps(found, indent=2) + "\n")
    return rewrite_report(run_dir)


def rewrite_report(run_dir: Path) -> Path:
    """report.md of a run directory written again (with what was added beside it since)."""
    run = load_run(run_dir)
    return write_report(run, run.objective, run_dir, f"bitscout report: {run_dir.name}")


FINETUNED = "finetune"  # RUN_DIR/finetune/trial_<N>/metrics.json, written by `bitscout finetune`


def finetune_section(out: Path) -> list[str]:
    """Each fine-tuned config's validation metrics before (post-training) and after training,
    and its test metrics (`bitscout finetune RUN_DIR`)."""
    records = []
    for path in sorted((out / FINETUNED).glob("trial_*/metrics.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("kind") == FINETUNED:
            records.append((path.parent.name, record))
    if not records:
        return []
    rows = []
    for name, r in sorted(records, key=lambda item: int(item[1].get("trial", 0))):
        test = r.get("test") or {}
        for metric in r["after"]:
            rows.append(f"| {r.get('trial', name)} | {metric} | {_number(r['before'][metric])} | "
                        f"{_number(r['after'][metric])} | {_number(test.get(metric))} | "
                        f"{r['epochs']} |")  # fmt: skip
    return [
        "## Fine-tuned",
        "\n".join([
            f"`bitscout finetune {out}`: each config trained from the float weights with its "
            f"quantization in the forward pass (`{FINETUNED}/trial_<N>/`: model.pt, best.toml, "
            "metrics.json). Before: post-training quantization; both on the validation rows.",
            "", "| trial | metric | before | after | test | epochs |", "|---|---|---|---|---|---|",
            *rows,
        ]),
    ]  # fmt: skip
