"""`bitscout export RUN_DIR` and `bitscout quantize --out DIR`: a config of a finished search
(or any plan) written as the artifacts a hardware flow takes, optionally checked against
hls4ml's C++ emulation."""

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from bitscout._core.files import write_text
from bitscout._core.toml import read_toml
from bitscout.cli.common import console, output_dir
from bitscout.cli.config import Config, load_config
from bitscout.errors import ConfigError
from bitscout.export.artifacts import write_checkpoint, write_npz, write_precision
from bitscout.export.hardware import Node, hardware
from bitscout.export.hls4ml import to_hls4ml, verify, write_hls4ml
from bitscout.quant.apply import QuantPlan, parse_plan

TARGETS = ("hls4ml", "checkpoint", "npz")
MODEL_CODE = """from bitscout.cli.build import load_data, make_model
from bitscout.cli.config import load_config

cfg = load_config({config!r})
model = make_model(cfg, load_data(cfg))  # the model as bitscout builds it for this config"""


@dataclass(frozen=True)
class Subject:
    """What is exported: the float model, the plan, where they came from, the rows to check."""

    model: nn.Module
    plan: QuantPlan | Mapping[str, Any]
    config: Path
    x_val: torch.Tensor
    label: str  # "trial 12", "best.toml", a --quant file


def parse_targets(text: str) -> list[str]:
    """`hls4ml`, `checkpoint`, `npz`, or several joined by commas."""
    targets = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ConfigError("--to", f"must be one or more of {', '.join(TARGETS)}", text)
    return targets


def export(subject: Subject, targets: Sequence[str], out: Path, console: Console) -> list[Path]:
    """Write each target's files into `out` and show the datapath's types."""
    model, plan = subject.model, subject.plan
    nodes = hardware(model, plan)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_precision(model, plan, out / "precision.json")]
    if "hls4ml" in targets or "checkpoint" in targets:
        files.append(write_checkpoint(model, plan, out / "quantized.pt"))
    if "npz" in targets:
        files.append(write_npz(model, plan, out / "codes.npz"))
    if "hls4ml" in targets:
        shape = tuple(subject.x_val.shape[1:])
        code = MODEL_CODE.format(config=str(subject.config.resolve()))
        files += write_hls4ml(to_hls4ml(model, plan, shape), nodes, out, code)
    show_datapath(console, nodes, subject.label)
    console.print(f"wrote {', '.join(p.name for p in files)} to {out}", highlight=False)
    return files


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


def check(subject: Subject, out: Path, rows: int, console: Console) -> dict[str, Any]:
    """hls4ml's C++ emulation against bitscout on the first `rows` validation rows."""
    x = subject.x_val[:rows]
    console.print(f"compiling the hls4ml C++ emulation and running {len(x)} rows through it")
    found = verify(subject.model, subject.plan, x, out / "hls4ml_prj", tuple(x.shape[1:]))
    write_text(out / "verify.json", json.dumps(found, indent=2) + "\n")
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
    return found


def quant_file(path: str | Path) -> QuantPlan:
    """The `[passes.quantize]` table of a TOML file (best.toml, a --quant file)."""
    table = read_toml(path).get("passes", {}).get("quantize")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: passes.quantize", "table is required", file=True)
    try:
        return parse_plan(table)
    except ConfigError as err:  # the key belongs to that file, not the config
        raise ConfigError(f"{path}: {err.key}", err.rule, err.value, file=True) from err


def run_config(run_dir: Path, summary: Mapping[str, Any], given: str | None) -> Config:
    """The search's config: `--config`, else the path the run recorded."""
    path = Path(given or summary.get("config") or "")
    if not path.is_file():
        flag = "--config" if given else str(run_dir / "summary.json")
        rule = "names no config file; pass the search's config with --config"
        raise ConfigError(flag, rule, str(path), file=not given)
    return load_config(path)


def float_model_of(run_dir: Path, summary: Mapping[str, Any], cfg: Config, data: Any) -> nn.Module:
    """The run's float model: its checkpoint (recorded, else RUN_DIR/model.pt) or, for a
    dataset without a train split, the model as built."""
    from bitscout.cli.build import make_model
    from bitscout.zoo.train import load_checkpoint

    source = summary.get("model_source")
    if source == "given":
        rule = "holds a model given from Python: export it with bitscout.export in Python"
        raise ConfigError(str(run_dir), rule, file=True)
    model = make_model(cfg, data)
    if source == "as built":
        return model.eval()
    recorded = Path(source["path"]) if isinstance(source, dict) else None
    path = recorded if recorded is not None and recorded.is_file() else run_dir / "model.pt"
    return load_checkpoint(model, path).eval()


def trial_plan(run_dir: Path, number: int) -> dict[str, Any]:
    """Trial `number`'s config of the run, as a `[passes.quantize]` table."""
    from bitscout.results.outputs import plan_table, row_config
    from bitscout.results.report import load_run

    run = load_run(run_dir)
    rows = run.trials[run.trials["number"] == number]
    if rows.empty or rows.iloc[0]["state"] not in ("complete", "infeasible"):
        raise ConfigError("--trial", f"no evaluated trial with that number in {run_dir}", number)
    space = run.space()
    if space is None:
        raise ConfigError(str(run_dir), "was made before runs kept their space: use --quant")
    return plan_table(space, row_config(rows.iloc[0].to_dict(), run.dimensions))


def subject_of_run(
    run_dir: Path, trial: int | None, quant: str | None, config: str | None
) -> Subject:
    """The float model, data and plan of a finished search: trial `trial`, the `quant` file,
    or the run's best.toml."""
    from bitscout.cli.build import load_data

    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(str(run_dir), f"not a finished search directory ({err})") from err
    cfg = run_config(run_dir, summary, config)
    data = load_data(cfg)
    model = float_model_of(run_dir, summary, cfg, data)
    if trial is not None:
        plan: QuantPlan | Mapping[str, Any] = trial_plan(run_dir, trial)
        label = f"trial {trial}"
    else:
        path = Path(quant) if quant else run_dir / "best.toml"
        plan, label = quant_file(path), path.name
    return Subject(model, plan, cfg.source or Path(), data.x_val, label)


def cmd_export(args: argparse.Namespace) -> int:
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
