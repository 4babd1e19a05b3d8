"""`bitscout report DIR`: a finished search's tables and plots, or a re-ranking."""

import argparse
from pathlib import Path

from bitscout.cli.common import console


def cmd_report(args: argparse.Namespace) -> int:
    from bitscout.results.display import show_result
    from bitscout.results.report import load_run, rerank_objective
    from bitscout.results.report_md import concluded, write_report

    out = Path(args.dir)
    run = load_run(out)
    objective, where, title = run.objective, out, f"bitscout report: {out.name}"
    if args.objective is not None or args.constraint:
        objective = rerank_objective(run, args.objective, args.constraint)
        where, title = out / args.name, f"bitscout re-ranking: {out.name}"
    path = write_report(run, objective, where, title, tables=where != out)
    units = run.summary.get("metric_units", {})
    rows = int(run.summary["eval_samples"])
    show_result(console, concluded(run, objective), objective, run.dimensions, units, rows)
    console.print(f"report written to {path}", highlight=False)
    return 0
