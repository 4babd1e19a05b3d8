"""`bitscout compare CONFIG`: strategies against each other over seeds."""

import argparse
from pathlib import Path

from bitscout.cli.common import console, output_dir


def cmd_compare(args: argparse.Namespace) -> int:
    from bitscout.analysis.compare import run_compare
    from bitscout.cli.config import load_config

    cfg = load_config(args.config)
    out = output_dir(args.out or Path("runs") / f"{Path(args.config).stem}-compare", "--out")
    run_compare(
        cfg, args.strategies, args.repeats, out, console, trials=args.trials, load=args.load
    )
    return 0
