"""`bitscout train` and `bitscout quantize`: the float model, and one plan applied to it."""

import argparse
from pathlib import Path

from rich.table import Table

from bitscout._core.files import output_dir
from bitscout.cli.common import console
from bitscout.errors import ConfigError


def cmd_train(args: argparse.Namespace) -> int:
    from bitscout.cli.build import load_data, train_to
    from bitscout.cli.config import load_config

    cfg = load_config(args.config)
    train_to(cfg, load_data(cfg, console), output_dir(args.out, "--out"), console)
    return 0


def _quant_plan(args: argparse.Namespace):  # noqa: ANN202 - QuantPlan | None
    """`--quant FILE` (a `[passes.quantize]` table) wins over the config's own."""
    from bitscout.cli.config import load_config
    from bitscout.cli.export import quant_file

    return load_config(args.config).quantize if args.quant is None else quant_file(args.quant)


def cmd_quantize(args: argparse.Namespace) -> int:
    from bitscout.cli.build import load_data, make_model
    from bitscout.cli.config import load_config
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
        from bitscout.cli.export import FIXED_POINT, config_subject, export

        # the fixed-point targets: QONNX refuses what hls4ml takes (wrap, narrow accumulators)
        subject = config_subject(model, plan, Path(args.config), data.x_val, "this plan")
        export(subject, FIXED_POINT, output_dir(args.out, "--out"), console)
    return 0
