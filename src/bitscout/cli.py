"""Command line: parse arguments and dispatch; the work lives in the other modules."""

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.table import Table

from bitscout.compare import run_compare
from bitscout.config import load_config, read_toml
from bitscout.dashboard import serve_dashboard
from bitscout.errors import ConfigError, SearchFailed
from bitscout.evaluate.evaluator import evaluate_model
from bitscout.quant.apply import fx_name, parse_plan, quantizable_layers, quantize_model
from bitscout.quant.layers import TYPE_NAMES
from bitscout.quant.space import parse_space
from bitscout.report import load_run, rerank_objective
from bitscout.report_md import write_report
from bitscout.search import Overrides, SearchRun, check_search, run_search
from bitscout.study.parallel import STORAGE_ENV
from bitscout.workflow import load_data, make_model, train_to
from bitscout.zoo.train import load_checkpoint

console = Console()


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    train_to(cfg, load_data(cfg, console), output_dir(args.out, "--out"), console)
    return 0


def _quant_plan(args: argparse.Namespace):  # noqa: ANN202 - QuantPlan | None
    """`--quant FILE` (a `[passes.quantize]` table) wins over the config's own."""
    if args.quant is None:
        return load_config(args.config).quantize
    raw = read_toml(args.quant)
    table = raw.get("passes", {}).get("quantize")
    if not isinstance(table, dict):
        raise ConfigError(f"{args.quant}: passes.quantize", "table is required", file=True)
    try:
        return parse_plan(table)
    except ConfigError as err:  # the key belongs to the --quant file, not the config
        raise ConfigError(f"{args.quant}: {err.key}", err.rule, err.value, file=True) from err


def cmd_quantize(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    plan = _quant_plan(args)
    if plan is None:
        raise ConfigError(f"{args.config}: passes.quantize", "table is required (or --quant)")
    data = load_data(cfg, console)
    model = load_checkpoint(make_model(cfg, data), args.load)
    quantized = quantize_model(model, plan)
    before = evaluate_model(model, data.x_val, data.y_val)
    after = evaluate_model(quantized, data.x_val, data.y_val)
    table = Table(title=f"{cfg.model} on {cfg.dataset} validation ({len(data.y_val)} samples)")
    for column in ("metric", "float", "quantized", "change"):
        table.add_column(column, justify="right")
    for name in ("accuracy", "loss"):
        table.add_row(
            name, f"{before[name]:.4f}", f"{after[name]:.4f}", f"{after[name] - before[name]:+.4f}"
        )
    console.print(table)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    out = output_dir(args.out or Path("runs") / Path(args.config).stem, "--out")
    if not args.study:
        raise ConfigError("--study", "must be a non-empty name", args.study)
    storage = args.storage or os.environ.get(STORAGE_ENV) or default_storage(out)
    run = SearchRun(out, storage, args.study, load=args.load, child=args.child)
    summary = run_search(cfg, run, _overrides(args), console)
    if not args.child:
        everyone = summary["trials_run_all_workers"]
        others = f" ({everyone} by all workers)" if everyone != summary["trials_run"] else ""
        console.print(
            f"{summary['trials_run']} trials by this worker{others} in "
            f"{summary['wall_s']:.2f} s; {summary['complete']} complete in the study; "
            f"outputs in {out}"
        )
    return 0


def output_dir(path: str | Path, flag: str) -> Path:
    """An output directory to create or reuse: refused when a file is in the way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(flag, "names an existing file, not a directory", str(path))
    return path


def default_storage(out: Path) -> str:
    """The run's own journal file (several local workers can share it); a run made before
    journals were the default keeps its SQLite file."""
    legacy = out / "study.db"
    return f"sqlite:///{legacy}" if legacy.exists() else str(out / "study.journal")


def cmd_dashboard(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    storage = args.storage or default_storage(out)
    if args.storage is None and not Path(storage.removeprefix("sqlite:///")).exists():
        raise ConfigError(str(out), "no study here (study.journal or study.db)", file=True)
    serve_dashboard(storage, args.host, args.port, console)
    return 0


def _overrides(args: argparse.Namespace) -> Overrides:
    return Overrides(
        strategy=args.strategy, sampler=args.sampler, trials=args.trials, seed=args.seed
    )


def cmd_space(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    check_search(cfg, Overrides())
    data = load_data(cfg)
    model = make_model(cfg, data)
    space = parse_space(cfg.search.get("search_space", {}), model)
    layers = Table(title=f"quantizable layers of {cfg.model}")
    for column in ("layer", "module", "type", "shape"):
        layers.add_column(column)
    for path, layer in quantizable_layers(model).items():
        layers.add_row(fx_name(path), path, TYPE_NAMES[type(layer)], str(tuple(layer.weight.shape)))
    console.print(layers)
    dims = Table(title=f"search dimensions (by {space.by})")
    dims.add_column("dimension")
    dims.add_column("choices")
    for d in space.dimensions:
        dims.add_row(d.name, ", ".join(map(str, d.choices)))
    console.print(dims)
    console.print(f"{space.size} candidates")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    run = load_run(out)
    if args.objective is None and not args.constraint:
        path = write_report(run, run.objective, out, f"bitscout report: {out.name}")
    else:
        objective = rerank_objective(run, args.objective, args.constraint)
        path = write_report(
            run, objective, out / args.name, f"bitscout re-ranking: {out.name}", tables=True
        )
    console.print(f"report written to {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    out = output_dir(args.out or Path("runs") / f"{Path(args.config).stem}-compare", "--out")
    run_compare(
        cfg, args.strategies, args.repeats, out, console, trials=args.trials, load=args.load
    )
    console.print(f"comparison written to {out}")
    return 0


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other bitscout error (no usage dump:
    `--help` shows that)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("bitscout").strip()
        self.exit(2, f"bitscout: error: {where + ': ' if where else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bitscout", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train = sub.add_parser("train", help="train the float model and save a checkpoint")
    train.add_argument("config")
    train.add_argument("--out", default="runs/train", help="output directory (default %(default)s)")
    train.set_defaults(func=cmd_train)
    quant = sub.add_parser("quantize", help="apply [passes.quantize] and compare with float")
    quant.add_argument("config")
    quant.add_argument("--load", required=True, help="float checkpoint (model.pt)")
    quant.add_argument("--quant", help="TOML file with a [passes.quantize] table (e.g. best.toml)")
    quant.set_defaults(func=cmd_quantize)
    _add_search(sub)
    _add_report(sub)
    _add_compare(sub)
    dash = sub.add_parser("dashboard", help="open a run's study in optuna-dashboard")
    dash.add_argument("dir", help="the search's output directory")
    dash.add_argument("--storage", help="storage URL, when the search used --storage")
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    dash.add_argument("--port", type=integer, default=8080, help="port (default %(default)s)")
    dash.set_defaults(func=cmd_dashboard)
    space = sub.add_parser("space", help="print the layers, dimensions and size of the space")
    space.add_argument("config")
    space.set_defaults(func=cmd_space)
    return parser


Subparsers = argparse._SubParsersAction


def _add_search(sub: Subparsers) -> None:
    search = sub.add_parser("search", help="search the quantization space of a trained model")
    search.add_argument("config")
    search.add_argument("--load", help="float checkpoint; default: DIR/model.pt, else train one")
    search.add_argument("--out", help="output directory (default runs/<config name>)")
    search.add_argument("--strategy", help="bruteforce or optuna (overrides the config)")
    search.add_argument(
        "--sampler", help="Optuna sampler: tpe, random, nsgaii, ... (implies optuna)"
    )
    search.add_argument("--trials", type=integer, help="total trials in the study (n_trials)")
    search.add_argument("--seed", type=integer, help="seed of the strategy")
    search.add_argument(
        "--storage",
        help=f"journal file path or RDB URL (default: ${STORAGE_ENV}, else DIR/study.journal)",
    )
    search.add_argument("--study", default="bitscout", help="study name (default %(default)s)")
    search.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # n_jobs worker
    search.set_defaults(func=cmd_search)


def _add_report(sub: Subparsers) -> None:
    report = sub.add_parser("report", help="tables and plots of a finished search")
    report.add_argument("dir", help="the search's output directory")
    report.add_argument(
        "--objective", help='re-rank with new scales: "accuracy=2.0,average_bitwidth=-0.1"'
    )
    report.add_argument(
        "--constraint",
        action="append",
        default=[],
        help='re-rank under a constraint, e.g. "accuracy>=0.9" (repeatable)',
    )
    report.add_argument(
        "--name", default="rerank", help="subdirectory for a re-ranking (default %(default)s)"
    )
    report.set_defaults(func=cmd_report)


def _add_compare(sub: Subparsers) -> None:
    compare = sub.add_parser("compare", help="compare strategies over seeds on one space")
    compare.add_argument("config")
    compare.add_argument(
        "--strategies",
        default="bruteforce,tpe,random",
        help="comma-separated: bruteforce and Optuna samplers (default %(default)s)",
    )
    compare.add_argument(
        "--repeats", type=integer, default=10, help="seeds 0..N-1 (default %(default)s)"
    )
    compare.add_argument("--trials", type=integer, help="trials per run (default: n_trials)")
    compare.add_argument("--out", help="output directory (default runs/<config name>-compare)")
    compare.add_argument("--load", help="float checkpoint; default: DIR/model.pt, else train one")
    compare.set_defaults(func=cmd_compare)


def error_line(err: ConfigError, config: str | None) -> str:
    """One line that names the file: errors about a config key get the config's path in front
    (flags, paths and errors that already name the file stand as they are)."""
    text = " ".join(str(err).split())
    if config is None or err.file or err.key.startswith(("--", config)):
        return text
    return f"{config}: {text}"


def os_error_line(err: OSError) -> str:
    """`cannot write runs/a/trials.csv: No space left on device (ENOSPC)`, in one line."""
    code = errno.errorcode.get(err.errno or 0)
    what = f"{err.strerror or err}" + (f" ({code})" if code else "")
    if err.filename is None:
        return " ".join(what.split())
    return f"cannot use {err.filename}: {' '.join(what.split())}"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a batch system's stop) ends a search like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as err:
        print(f"bitscout: error: {error_line(err, getattr(args, 'config', None))}", file=sys.stderr)
        return 2
    except SearchFailed as err:
        print(f"bitscout: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the machine, not the input: a full disk, a read-only directory
        print(f"bitscout: error: {os_error_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "bitscout: interrupted; finished trials are kept in the store, "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
