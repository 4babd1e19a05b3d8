"""`bitscout compare CONFIG`: strategies against each other over seeds. The config's model,
data, space and objective become a `Job`, given to the code behind `bitscout.compare`."""

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bitscout._core.files import output_dir
from bitscout.analysis.compare import Runs, check_compare, check_single, compare_job
from bitscout.analysis.compare_spec import BUDGETS, WITHIN, parse_budgets, parse_within
from bitscout.cli.build import Overrides, check_search, float_model, load_data, make_model
from bitscout.cli.common import console
from bitscout.cli.config import Config, load_config
from bitscout.data.containers import prepare
from bitscout.quant.space import parse_space
from bitscout.results.compare_out import CompareResult
from bitscout.results.rundir import file_sha256
from bitscout.study.run import Job


def command_line(cfg: Config, runs: Runs, out: Path, load: str | Path | None) -> str:
    """The command that re-runs this comparison, every option spelled out."""
    words = [
        "bitscout", "compare", str(cfg.source or "CONFIG"), "--strategies", ",".join(runs.labels),
        "--repeats", str(runs.repeats), *(["--trials", str(runs.trials)] if runs.trials else []),
        "--within", f"{runs.within:g}", "--budgets", ",".join(map(str, runs.budgets)),
        "--out", str(out), *(["--load", str(load)] if load is not None else []),
    ]  # fmt: skip
    return shlex.join(words)


def model_record(source: Any, out: Path) -> dict[str, Any]:
    """Where the float model came from: a checkpoint given or reused, one trained here from the
    config's seed (written into `out`), or the model as its builder made it."""
    trained = source == "trained" or (isinstance(source, dict) and bool(source.get("trained")))
    if source == "trained":  # as float_model said it before it recorded the checkpoint
        source = {"path": str(out / "model.pt"), "sha256": file_sha256(out / "model.pt")}
    if not isinstance(source, dict):
        return {"source": source}
    return {"source": "trained" if trained else "checkpoint", "checkpoint": source["path"],
            "checkpoint_sha256": source["sha256"]}  # fmt: skip


def cli_record(cfg: Config, runs: Runs, out: Path, load: str | Path | None,
               source: Any) -> dict[str, Any]:  # fmt: skip
    """The provenance the command adds: the command, the config file's SHA-256 and every
    option, and where the float model came from."""
    config = None if cfg.source is None else Path(cfg.source)
    options = {"config": None if config is None else str(config),
               "config_sha256": None if config is None else file_sha256(config),
               "model": cfg.model, "dataset": cfg.dataset, "strategies": list(runs.labels),
               "repeats": runs.repeats, "trials": runs.trials, "within": runs.within,
               "budgets": list(runs.budgets), "out": str(out),
               "load": None if load is None else str(load)}  # fmt: skip
    return {"command": command_line(cfg, runs, out, load), "options": options,
            "model": model_record(source, out)}  # fmt: skip


def run_compare(
    cfg: Config,
    strategies: Sequence[str] | str,
    repeats: int,
    out: Path,
    console: Console,
    *,
    trials: int | None = None,
    load: str | Path | None = None,
    within: float = WITHIN,
    budgets: Sequence[int] | str = BUDGETS,
) -> CompareResult:
    """Run every strategy with seeds 0..repeats-1 and write compare.csv, compare.md,
    compare.json and plots/compare.png into `out`. Everything is checked before anything is
    written."""
    labels = check_compare(strategies, repeats, trials)
    runs = Runs(labels, repeats, trials, parse_within(within), parse_budgets(budgets))
    settings = check_search(cfg, Overrides())
    check_single(settings.objective)
    data = load_data(cfg, console)
    space = parse_space(cfg.search.get("search_space", {}), make_model(cfg, data))
    out.mkdir(parents=True, exist_ok=True)  # only once the whole config is known good
    model, source = float_model(cfg, data, load, out, console)
    n = settings.num_samples or len(data.y_val)
    test = None if data.x_test is None else prepare((data.x_test, data.y_test))
    job = Job(model, prepare((data.x_val[:n], data.y_val[:n])), space, settings, test_data=test)
    record = cli_record(cfg, runs, out, load, source)
    return compare_job(job, runs, out, f"{cfg.model} on {cfg.dataset}", console, record)


def cmd_compare(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    out = output_dir(args.out or Path("runs") / f"{Path(args.config).stem}-compare", "--out")
    run_compare(cfg, args.strategies, args.repeats, out, console, trials=args.trials,
                load=args.load, within=args.within, budgets=args.budgets)  # fmt: skip
    return 0
