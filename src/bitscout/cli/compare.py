"""`bitscout compare CONFIG`: strategies against each other over seeds. The config's model,
data, space and objective become a `Job`, given to the code behind `bitscout.compare`."""

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from bitscout.analysis.compare import check_compare, check_single, compare_job
from bitscout.cli.build import Overrides, check_search, float_model, load_data, make_model
from bitscout.cli.common import console, output_dir
from bitscout.cli.config import Config, load_config
from bitscout.data.containers import prepare
from bitscout.quant.space import parse_space
from bitscout.results.compare_out import CompareResult
from bitscout.study.run import Job


def run_compare(
    cfg: Config,
    strategies: Sequence[str] | str,
    repeats: int,
    out: Path,
    console: Console,
    *,
    trials: int | None = None,
    load: str | Path | None = None,
) -> CompareResult:
    """Run every strategy with seeds 0..repeats-1 and write compare.csv, compare.md and
    plots/compare.png into `out`. Everything is checked before anything is written."""
    labels = check_compare(strategies, repeats, trials)
    settings = check_search(cfg, Overrides())
    check_single(settings.objective)
    data = load_data(cfg, console)
    space = parse_space(cfg.search.get("search_space", {}), make_model(cfg, data))
    out.mkdir(parents=True, exist_ok=True)  # only once the whole config is known good
    model, _ = float_model(cfg, data, load, out, console)
    n = settings.num_samples or len(data.y_val)
    job = Job(model, prepare((data.x_val[:n], data.y_val[:n])), space, settings)
    return compare_job(job, labels, repeats, trials, out, f"{cfg.model} on {cfg.dataset}",
                       console)  # fmt: skip


def cmd_compare(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    out = output_dir(args.out or Path("runs") / f"{Path(args.config).stem}-compare", "--out")
    run_compare(
        cfg, args.strategies, args.repeats, out, console, trials=args.trials, load=args.load
    )
    return 0
