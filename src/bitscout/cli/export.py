"""`bitscout export RUN_DIR` and `bitscout quantize --out DIR`: a config of a finished search
(or any plan) written as the artifacts a hardware flow takes, optionally checked against
hls4ml's C++ emulation."""

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from bitscout._core.files import output_dir
from bitscout.cli.common import console
from bitscout.cli.config import Config, load_config
from bitscout.errors import ConfigError
from bitscout.export import run as exporting
from bitscout.export.hardware import Node
from bitscout.export.project import DEFAULTS, HlsOptions, hls_options
from bitscout.export.run import FIXED_POINT, TARGETS, Subject, quant_file, run_plan
from bitscout.results.rundir import Run, load_run

__all__ = ["FIXED_POINT", "TARGETS", "Subject", "config_subject", "export", "quant_file"]


def config_subject(
    model: nn.Module, plan: Any, config: Path, x_val: torch.Tensor, label: str
) -> Subject:
    """What a config's command exports: convert_hls4ml.py names `config` as its source."""
    return Subject(model, plan, x_val, label, str(config.resolve()))


def parse_targets(text: str) -> list[str]:
    """`hls4ml`, `checkpoint`, `npz`, or several joined by commas."""
    return exporting.parse_targets(text, "--to")


def export(
    subject: Subject, targets: Sequence[str], out: Path, console: Console,
    hls: HlsOptions = DEFAULTS, rows: int = 2000,
) -> list[Path]:  # fmt: skip
    """Write each target's files into `out` and show the datapath's types."""
    found = exporting.write_targets(subject, targets, out, hls, rows)
    if found.nodes:  # QONNX alone has no fixed-point datapath to show
        show_datapath(console, found.nodes, subject.label)
    console.print(f"wrote {', '.join(str(p.relative_to(out)) for p in found.files)} to {out}",
                  highlight=False)  # fmt: skip
    return found.files


def show_datapath(console: Console, nodes: Sequence[Node], label: str) -> None:
    """Each node's types as `W,I` of ap_fixed<W,I>; `*` marks the ones bitscout sized."""
    table = Table(title=f"hardware types of {label}: W,I of ap_fixed<W,I>, * sized by bitscout")
    for column in ("node", "kind", "result", "weight", "bias", "accum"):
        table.add_column(column)
    for node in nodes:
        types = {"result": node.result, **node.params}

        def cell(name: str, n: Node = node, types: dict = types) -> str:
            hw = types.get(name)
            if hw is None:
                return ""
            sized = n.fan_in is not None and name in ("accum", "result") and name not in n.given
            return f"{hw.width},{hw.width - hw.frac_width}{'*' if sized else ''}"

        kind = f"{node.kind} (float)" if node.float_ else node.kind
        table.add_row(node.name, kind, *(cell(c) for c in ("result", "weight", "bias", "accum")))
    console.print(table)


def check(
    subject: Subject, out: Path, rows: int, console: Console, hls: HlsOptions = DEFAULTS,
    targets: Sequence[str] = ("hls4ml",),
) -> dict[str, Any]:  # fmt: skip
    """hls4ml's C++ emulation (and QONNX's executor, with `qonnx`) against bitscout on the
    first `rows` validation rows."""
    shown = min(rows, len(subject.x)) if subject.x is not None else rows
    hls4ml = "hls4ml" in targets or "qonnx" not in targets
    if hls4ml:
        console.print(f"compiling the hls4ml C++ emulation and running {shown} rows through it")
    found = exporting.check(subject, out, rows, hls, targets)
    if hls4ml:
        _show_hls4ml(found, console)
    if "qonnx" in found:
        q = found["qonnx"]
        console.print(
            f"QONNX {q['qonnx']} executor, {q['rows']} rows: {q['differing_values']} values "
            f"differ, largest logit difference {q['max_logit_difference']:.3g}, top class "
            f"agrees on {q['top_class_agreement']:.2%} of rows",
            highlight=False,
        )
    return found


def _show_hls4ml(found: Mapping[str, Any], console: Console) -> None:
    table = Table(title=f"hls4ml {found['hls4ml']} against bitscout, {found['rows']} rows")
    table.add_column("quantized layer")
    table.add_column("max abs difference, same layer input", justify="right")
    for entry in found["layers"]:
        table.add_row(entry["layer"], f"{entry['max_abs_difference']:.3g}")
    console.print(table)
    console.print(
        f"end to end: top class agrees on {found['top_class_agreement']:.2%} of rows, largest "
        f"logit difference {found['max_logit_difference']:.3g}; computed in float by bitscout "
        f"(fixed point in hls4ml): {', '.join(found['float_nodes']) or 'none'}",
        highlight=False,
    )


def run_config(run_dir: Path, summary: Mapping[str, Any], given: str | None) -> Config:
    """The search's config: `--config`, else the path the run recorded."""
    path = Path(given or summary.get("config") or "")
    if not path.is_file():
        flag = "--config" if given else str(run_dir / "summary.json")
        rule = "names no config file; pass the search's config with --config"
        raise ConfigError(flag, rule, str(path), file=not given)
    return load_config(path)


def float_model_of(run: Run, cfg: Config, data: Any) -> nn.Module:
    """The run's float model: its checkpoint (recorded, else RUN_DIR/model.pt, its sha256
    checked) loaded into the config's model or, for a dataset without a train split, the
    model as built."""
    from bitscout.cli.build import make_model

    if run.summary.get("model_source") == "given":
        rule = "holds a model given from Python: export it with bitscout.export in Python"
        raise ConfigError(str(run.path), rule, file=True)
    if run.summary.get("model_source") == "trained":  # written before runs kept its sha256
        console.print(f"note: {run.path} records no sha256 of its model.pt (a run made before "
                      "bitscout recorded it): that it is the model searched cannot be checked",
                      highlight=False)  # fmt: skip
    return run.float_model(lambda: make_model(cfg, data))


def _export_finetuned(args: argparse.Namespace, targets: list[str], hls: HlsOptions) -> int:
    """A fine-tuned directory (`bitscout finetune`'s): its weights and its best.toml."""
    from bitscout.cli.finetune import finetuned_subject

    subject = finetuned_subject(Path(args.run_dir), args, args.config)
    out = output_dir(args.out or Path(args.run_dir) / "export", "--out")
    export(subject, targets, out, console, hls, args.rows)
    if args.verify:
        check(subject, out, args.rows, console, hls, targets)
    return 0


def options_of(args: argparse.Namespace) -> HlsOptions:
    """hls4ml's project settings from the flags, refused under their flag names."""
    names = ("part", "clock_period", "io_type", "strategy", "reuse_factor")
    given = {name: value for name in names if (value := getattr(args, name)) is not None}
    return hls_options(**given, flags=True)


def subject_of_run(
    run_dir: Path, trial: int | None, quant: str | None, config: str | None
) -> Subject:
    """The float model, data and plan of a finished search: trial `trial`, the `quant` file,
    or the run's best.toml."""
    from bitscout.cli.build import load_data

    run = load_run(run_dir)
    cfg = run_config(run_dir, run.summary, config)
    data = load_data(cfg)
    model = float_model_of(run, cfg, data)
    if quant is not None:
        plan, label = quant_file(quant), Path(quant).name
    elif trial is not None and run.space() is None:
        raise ConfigError(str(run_dir), "was made before runs kept their space: use --quant")
    else:
        plan, label = run_plan(run, trial, "--trial")
    return config_subject(model, plan, cfg.source or Path(), data.x_val, label)


def cmd_export(args: argparse.Namespace) -> int:
    targets = parse_targets(args.to)
    exporting.check_rows(args.rows, "--rows")
    hls = options_of(args)
    run_dir = Path(args.run_dir)
    from bitscout.study.finetune import is_finetuned

    if is_finetuned(run_dir):
        return _export_finetuned(args, targets, hls)
    if args.trial is not None and args.quant is not None:
        raise ConfigError("--trial", "and --quant exclude each other: give one")
    subject = subject_of_run(run_dir, args.trial, args.quant, args.config)
    default = exporting.default_out(run_dir, args.trial)
    out = output_dir(args.out or default, "--out")
    export(subject, targets, out, console, hls, args.rows)
    if args.verify:
        found = check(subject, out, args.rows, console, hls, targets)
        if args.out is None and args.trial is None and args.quant is None:
            from bitscout.results.report_md import add_verification

            add_verification(run_dir, found)
    return 0
