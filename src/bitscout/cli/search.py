"""`bitscout search CONFIG`: argv -> the search's spec (the config and the flags, checked by
the rules `bitscout.search` uses) -> `run_search`, the function behind `bitscout.search` ->
one summary line."""

import argparse
import os
from pathlib import Path

from rich.console import Console

from bitscout._core.files import output_dir
from bitscout.cli.common import console, default_storage
from bitscout.results.console import Verbosity
from bitscout.study.store import STORAGE_ENV  # a light package: no Optuna


def cmd_search(args: argparse.Namespace) -> int:
    from bitscout.api import run_search
    from bitscout.cli.build import Overrides, Where, search_job
    from bitscout.cli.config import load_config
    from bitscout.study.spec import BY_PYTHON, check

    cfg = load_config(args.config)
    out = output_dir(args.out or Path("runs") / Path(args.config).stem, "--out")
    study = check(BY_PYTHON["study"], args.study, "--study")
    storage = args.storage or os.environ.get(STORAGE_ENV) or default_storage(out)
    overrides = Overrides(args.strategy, args.sampler, args.trials, args.seed)
    verbosity: Verbosity = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    quiet = Console(quiet=verbosity == "quiet")
    job = search_job(cfg, Where(out, storage, study, args.load), overrides, quiet)
    summary = run_search(job, console, verbosity).summary
    if verbosity == "quiet":
        return 0
    everyone = summary["trials_run_all_workers"]
    others = f" ({everyone} by all workers)" if everyone != summary["trials_run"] else ""
    console.print(
        f"{summary['trials_run']} trials by this worker{others} in {summary['wall_s']:.2f} s; "
        f"{summary['complete']} complete in the study; outputs in {out}",
        highlight=False,
    )
    return 0
