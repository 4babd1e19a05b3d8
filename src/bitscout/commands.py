"""The work of each `bitscout` command. Each imports what it needs when it runs, so that
`bitscout --help` and `bitscout space` do not pay for PyTorch's, Optuna's and matplotlib's
start-up when they do not use them."""

import argparse
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bitscout.errors import ConfigError

console = Console()
STORAGE_ENV = "BITSCOUT_STORAGE"  # as bitscout.study.parallel, without importing it


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


def cmd_train(args: argparse.Namespace) -> int:
    from bitscout.build import load_data, train_to
    from bitscout.config import load_config

    cfg = load_config(args.config)
    train_to(cfg, load_data(cfg, console), output_dir(args.out, "--out"), console)
    return 0


def _quant_plan(args: argparse.Namespace):  # noqa: ANN202 - QuantPlan | None
    """`--quant FILE` (a `[passes.quantize]` table) wins over the config's own."""
    from bitscout.config import load_config
    from bitscout.export.command import quant_file

    return load_config(args.config).quantize if args.quant is None else quant_file(args.quant)


def cmd_quantize(args: argparse.Namespace) -> int:
    from bitscout.build import load_data, make_model
    from bitscout.config import load_config
    from bitscout.evaluate.evaluator import evaluate_model
    from bitscout.quant.apply import quantize_model
    from bitscout.zoo.train import load_checkpoint

    cfg = load_config(args.config)
    plan = _quant_plan(args)
    if plan is None:
        raise ConfigError(f"{args.config}: passes.quantize", "table is required (or --quant)")
    data = load_data(cfg, console)
    model = load_checkpoint(make_model(cfg, data), args.load)
    try:
        quantized = quantize_model(model, plan)
    except ConfigError as err:  # a layer the model lacks: the --quant file's error, if one
        if args.quant is None:
            raise
        raise ConfigError(f"{args.quant}: {err.key}", err.rule, err.value, file=True) from err
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
    if args.out is not None:
        from bitscout.export.command import TARGETS, Subject, export

        subject = Subject(model, plan, Path(args.config), data.x_val, "this plan")
        export(subject, TARGETS, output_dir(args.out, "--out"), console)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bitscout.export.command import check, export, parse_targets, subject_of_run

    targets = parse_targets(args.to)
    run_dir = Path(args.run_dir)
    if args.trial is not None and args.quant is not None:
        raise ConfigError("--trial", "and --quant exclude each other: give one")
    subject = subject_of_run(run_dir, args.trial, args.quant, args.config)
    default = run_dir / ("export" if args.trial is None else f"export_trial_{args.trial}")
    out = output_dir(args.out or default, "--out")
    export(subject, targets, out, console)
    if args.verify:
        found = check(subject, out, args.rows, console)
        if args.out is None and args.trial is None and args.quant is None:
            from bitscout.results.report_md import add_verification

            add_verification(run_dir, found)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from bitscout.build import Overrides, Where, search_job
    from bitscout.config import load_config
    from bitscout.job import run_job

    cfg = load_config(args.config)
    out = output_dir(args.out or Path("runs") / Path(args.config).stem, "--out")
    if not args.study:
        raise ConfigError("--study", "must be a non-empty name", args.study)
    storage = args.storage or os.environ.get(STORAGE_ENV) or default_storage(out)
    overrides = Overrides(args.strategy, args.sampler, args.trials, args.seed)
    verbosity = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    quiet = Console(quiet=verbosity == "quiet")
    job = search_job(cfg, Where(out, storage, args.study, args.load), overrides, quiet)
    summary = run_job(job, console, verbosity).summary
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


def cmd_dashboard(args: argparse.Namespace) -> int:
    from bitscout.dashboard import serve_dashboard

    out = Path(args.dir)
    storage = args.storage or default_storage(out)
    if args.storage is None and not Path(storage.removeprefix("sqlite:///")).exists():
        raise ConfigError(str(out), "no study here (study.journal or study.db)", file=True)
    serve_dashboard(storage, args.host, args.port, console)
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from bitscout.build import Overrides, check_search, load_data, make_model
    from bitscout.config import load_config
    from bitscout.quant.apply import fx_name, quantizable_layers
    from bitscout.quant.layers import TYPE_NAMES
    from bitscout.quant.space import parse_space

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
    for column in ("dimension", "choices", "searched when name is"):
        dims.add_column(column, no_wrap=column == "dimension")
    for d in space.dimensions:
        dims.add_row(d.name, ", ".join(map(str, d.choices)), ", ".join(d.formats) or "any")
    console.print(dims)
    console.print(f"{space.size} candidates")
    return 0


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


def cmd_compare(args: argparse.Namespace) -> int:
    from bitscout.compare import run_compare
    from bitscout.config import load_config

    cfg = load_config(args.config)
    out = output_dir(args.out or Path("runs") / f"{Path(args.config).stem}-compare", "--out")
    run_compare(
        cfg, args.strategies, args.repeats, out, console, trials=args.trials, load=args.load
    )
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    from bitscout.probes_command import run_command

    flags = {"--load": args.load, "--out": args.out, "--hessian": args.hessian,
             "--seed": args.seed, "--config": args.run_config}  # fmt: skip
    run_command(args.config, flags, console)
    return 0
