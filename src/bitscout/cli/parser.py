"""The command line's parser: every command, its arguments and their help."""

import argparse
from typing import NoReturn

from bitscout.analysis.compare_spec import BUDGETS, KNOWN, WITHIN
from bitscout.study.store import STORAGE_ENV  # a light package: no Optuna


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other bitscout error (no usage dump:
    `--help` shows that)."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("bitscout").strip()
        self.exit(2, f"bitscout: error: {where + ': ' if where else ''}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="bitscout", description="Search how to quantize a trained neural network.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train = sub.add_parser("train", help="train the float model and save a checkpoint")
    train.add_argument("config")
    train.add_argument("--out", default="runs/train", help="output directory (default %(default)s)")
    train.set_defaults(func="train")
    quant = sub.add_parser("quantize", help="apply [passes.quantize] and compare with float")
    quant.add_argument("config")
    quant.add_argument("--load", required=True, help="float checkpoint (model.pt)")
    quant.add_argument("--quant", help="TOML file with a [passes.quantize] table (e.g. best.toml)")
    quant.add_argument("--out", help="also write the hardware artifacts (as export) to DIR")
    quant.set_defaults(func="quantize")
    _add_export(sub)
    _add_finetune(sub)
    _add_search(sub)
    _add_report(sub)
    _add_compare(sub)
    _add_sensitivity(sub)
    dash = sub.add_parser("dashboard", help="open a run's study in optuna-dashboard")
    dash.add_argument("dir", help="the search's output directory")
    dash.add_argument("--storage", help="storage URL, when the search used --storage")
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    dash.add_argument("--port", type=integer, default=8080, help="port (default %(default)s)")
    dash.set_defaults(func="dashboard")
    space = sub.add_parser("space", help="print the layers, dimensions and size of the space")
    space.add_argument("config")
    space.set_defaults(func="space")
    return parser


Subparsers = argparse._SubParsersAction


def _add_export(sub: Subparsers) -> None:
    export = sub.add_parser("export", help="write a searched config for a hardware flow")
    export.add_argument(
        "run_dir", help="a search's output directory, or RUN_DIR/finetune/trial_N (fine-tuned)"
    )
    which = export.add_mutually_exclusive_group()
    which.add_argument("--trial", type=integer, help="export this trial's config")
    which.add_argument("--quant", help="export this [passes.quantize] file (default: best.toml)")
    export.add_argument(
        "--to", required=True, help="hls4ml, checkpoint, npz, qonnx, or several joined by commas"
    )
    export.add_argument("--out", help="output directory (default RUN_DIR/export)")
    export.add_argument("--config", help="the search's config, when its recorded path moved")
    export.add_argument(
        "--verify", action="store_true",
        help="compile hls4ml's C++ emulation and compare it with bitscout (needs g++)",
    )  # fmt: skip
    export.add_argument(
        "--rows", type=integer, default=2000,
        help="validation rows to verify and to write to hls4ml's tb_data (default %(default)s)",
    )  # fmt: skip
    _add_hls4ml(export)
    export.set_defaults(func="export")


def _add_hls4ml(export: argparse.ArgumentParser) -> None:
    """hls4ml's project settings; unset ones take `export.project.HlsOptions`' defaults
    (not imported here: `bitscout --help` imports no torch)."""
    hls = export.add_argument_group("hls4ml project")
    hls.add_argument("--part", help="FPGA part (default: hls4ml's, xcvu13p-flga2577-2-e)")
    hls.add_argument("--clock-period", type=number, help="clock period in ns (default 5)")
    hls.add_argument("--io-type", help="io_parallel (default) or io_stream")
    hls.add_argument("--strategy", help="latency (default) or resource")
    hls.add_argument("--reuse-factor", type=integer,
                     help="every quantized layer's reuse factor (default 1)")  # fmt: skip


def _add_finetune(sub: Subparsers) -> None:
    tune = sub.add_parser(
        "finetune", help="train searched configs (quantization-aware) and score them again"
    )
    tune.add_argument("run_dir", help="a search's output directory")
    which = tune.add_mutually_exclusive_group()
    which.add_argument("--trial", type=integer, help="fine-tune this trial's config")
    which.add_argument("--top", type=integer, help="fine-tune the K best distinct configs")
    tune.add_argument("--epochs", type=integer, help="epochs (default: the run's training's)")
    tune.add_argument("--lr", type=float, help="learning rate (default: the run's training's)")
    tune.add_argument("--config", help="the search's config, when its recorded path moved")
    tune.set_defaults(func="finetune")


def _add_search(sub: Subparsers) -> None:
    search = sub.add_parser("search", help="search the quantization space of a trained model")
    search.add_argument("config")
    search.add_argument("--load", help="float checkpoint; default: DIR/model.pt, else train one")
    search.add_argument("--out", help="output directory (default runs/<config name>)")
    search.add_argument(
        "--strategy",
        help="bruteforce, greedy, ilp, optuna or a sampler: tpe, random, ... (overrides config)",
    )
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
    chatter = search.add_mutually_exclusive_group()
    chatter.add_argument("--verbose", action="store_true", help="print every trial")
    chatter.add_argument("--quiet", action="store_true", help="print only the final result")
    search.set_defaults(func="search")


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
    report.set_defaults(func="report")


def _add_compare(sub: Subparsers) -> None:
    compare = sub.add_parser("compare", help="compare strategies over seeds on one space")
    compare.add_argument("config")
    compare.add_argument(
        "--strategies",
        default="bruteforce,tpe,random",
        help=f"comma-separated, of: {', '.join(KNOWN)} (default %(default)s)",
    )
    compare.add_argument(
        "--repeats", type=integer, default=10, help="seeds 0..N-1 (default %(default)s)"
    )
    compare.add_argument("--trials", type=integer, help="trials per run (default: n_trials)")
    compare.add_argument(
        "--within", type=float, default=WITHIN,
        help="'near the optimum': within this many percent of it (default %(default)s)",
    )  # fmt: skip
    compare.add_argument(
        "--budgets", default=",".join(map(str, BUDGETS)),
        help="trials at which the median best so far is shown (default %(default)s)",
    )  # fmt: skip
    compare.add_argument("--out", help="output directory (default runs/<config name>-compare)")
    compare.add_argument("--load", help="float checkpoint; default: DIR/model.pt, else train one")
    compare.set_defaults(func="compare")


def _add_sensitivity(sub: Subparsers) -> None:
    sens = sub.add_parser(
        "sensitivity", help="each searched choice alone: how sensitive each layer is"
    )
    sens.add_argument(
        "config", metavar="CONFIG|RUN_DIR", help="a config, or a search's run directory"
    )
    sens.add_argument(
        "--load", metavar="CKPT", help="float checkpoint; default: DIR/model.pt, else train"
    )
    sens.add_argument(
        "--out", metavar="DIR", help="default runs/<config name>-sensitivity, or RUN_DIR"
    )
    sens.add_argument(
        "--hessian", type=integer, metavar="N",
        help="also estimate each layer's Hessian trace from N Hutchinson samples (default 0: off)",
    )  # fmt: skip
    sens.add_argument(
        "--seed", type=integer, metavar="S", help="seed of the Hessian samples (default: config's)"
    )
    sens.add_argument(
        "--config", dest="run_config", metavar="CONFIG", help="a run's config, if its path moved"
    )
    sens.add_argument(
        "--joint", action="store_true",
        help="also measure the ilp strategy's probes into sensitivity_joint.json, for reuse",
    )  # fmt: skip
    sens.set_defaults(func="sensitivity")
