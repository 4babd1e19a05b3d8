"""`bitscout sensitivity CONFIG|RUN_DIR`: the float model, validation rows and space of a
config (as `bitscout search` gets them) or of a finished search, given to the same code as
`bitscout.sensitivity(...)`, with the files written and the ranking shown."""

import argparse
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from bitscout._core.files import output_dir
from bitscout._core.validate import SEED_MAX, check_keys
from bitscout.analysis.sensitivity import check_int, measure
from bitscout.analysis.sensitivity_joint import check_joint, write_joint
from bitscout.cli.build import Overrides, check_search, float_model, load_data, make_model
from bitscout.cli.common import console
from bitscout.cli.config import Config, load_config
from bitscout.cli.export import float_model_of, run_config
from bitscout.data.containers import prepare
from bitscout.errors import ConfigError
from bitscout.quant.space import SearchSpace, parse_space
from bitscout.results.rundir import file_sha256, load_run
from bitscout.results.sensitivity import (
    CSV,
    JSON,
    PNG,
    RANKING,
    SensitivityResult,
    console_table,
    write_outputs,
)
from bitscout.zoo.train import load_checkpoint


@dataclass(frozen=True)
class Inputs:
    """What `bitscout sensitivity` works on, from a config or from a finished search."""

    model: nn.Module
    data: tuple[torch.Tensor, torch.Tensor]
    space: SearchSpace
    names: list[str]  # the objective's and the constraints' metrics
    out: Path
    seed: int
    details: dict[str, Any]


def _objective_names(cfg: Config) -> tuple[list[str], int | None]:
    """The config's objective and constraint metrics and `num_samples` (no strategy: none),
    latency left out: it is not measured per probe."""
    check_keys(cfg.search, ("search_space", "strategy"), "search")
    if "strategy" not in cfg.search:
        return [], None
    settings = check_search(cfg, Overrides())
    objective = settings.objective
    names = [*objective.names, *(c.metric for c in objective.constraints)]
    return [m for m in names if m != "latency"], settings.num_samples


def from_config(path: Path, load: str | None, out: str | None, console: Console) -> Inputs:
    """A config's float model (as `bitscout search` gets it: --load, OUT/model.pt, else
    trained into OUT), its validation rows and its search space."""
    cfg = load_config(path)
    if not isinstance(cfg.search.get("search_space"), Mapping):
        rule = "table is required for `bitscout sensitivity`: its choices are what is probed"
        raise ConfigError("search.search_space", rule)
    names, rows = _objective_names(cfg)
    data = load_data(cfg, console)
    space = parse_space(cfg.search["search_space"], make_model(cfg, data))  # before training
    where = output_dir(Path(out) if out else Path("runs") / f"{path.stem}-sensitivity", "--out")
    model, source = float_model(cfg, data, load, where, console)
    n = rows or len(data.y_val)
    details = {"config": str(path), "model": cfg.model, "dataset": cfg.dataset,
               "model_source": source}  # fmt: skip
    return Inputs(model, (data.x_val[:n], data.y_val[:n]), space, names, where, cfg.seed, details)


def from_run(run_dir: Path, load: str | None, out: str | None, config: str | None,
             console: Console) -> Inputs:  # fmt: skip
    """A finished search's float model, validation rows (as many as it used) and space."""
    run = load_run(run_dir)
    summary = run.summary
    cfg = run_config(run_dir, summary, config)
    data = load_data(cfg, console)
    if load is not None:
        model = load_checkpoint(make_model(cfg, data), load).eval()
        source: Any = {"path": load, "sha256": file_sha256(Path(load))}
    else:
        model, source = float_model_of(run, cfg, data), summary.get("model_source")
    table = summary.get("space") or cfg.search.get("search_space")
    if not isinstance(table, Mapping):
        raise ConfigError(str(run_dir), "records no search space", file=True)
    names, _ = _objective_names(cfg)
    n = int(summary.get("eval_samples") or len(data.y_val))
    details = {"config": str(cfg.source), "run": str(run_dir), "model": cfg.model,
               "dataset": cfg.dataset, "model_source": source}  # fmt: skip
    where = output_dir(Path(out) if out else run_dir, "--out")
    return Inputs(model, (data.x_val[:n], data.y_val[:n]), parse_space(table, model), names,
                  where, cfg.seed, details)  # fmt: skip


def command_line(target: str, flags: Mapping[str, Any]) -> str:
    """The command as typed (flags left at their defaults are left out)."""
    words = ["bitscout", "sensitivity", target]
    for flag, value in flags.items():
        if value is True:  # a switch
            words.append(flag)
        elif value is not None and value is not False:
            words += [flag, str(value)]
    return shlex.join(words)


def run_command(target: str, flags: Mapping[str, Any], console: Console) -> SensitivityResult:
    """`bitscout sensitivity CONFIG|RUN_DIR`: measure, write the files, show the ranking.
    `flags`: `--load`, `--out`, `--hessian`, `--seed`, `--config`, as given (None: absent),
    and `--joint` (True: the ILP's probes into sensitivity_joint.json too)."""
    hessian = check_int(flags.get("--hessian") or 0, "--hessian", 0, 10**6)
    seed = flags.get("--seed")
    if seed is not None:  # refused before any training or loading
        check_int(seed, "--seed", 0, SEED_MAX)
    path = Path(target)
    if path.is_dir():
        inputs = from_run(path, flags.get("--load"), flags.get("--out"), flags.get("--config"),
                          console)  # fmt: skip
    else:
        if flags.get("--config") is not None:
            raise ConfigError("--config", "is for a run directory, not a config file")
        inputs = from_config(path, flags.get("--load"), flags.get("--out"), console)
    seed = inputs.seed if seed is None else seed  # the config's seed is checked already
    joint = bool(flags.get("--joint"))
    if joint:
        check_joint(inputs.space, "--joint")
    say = lambda message: console.print(message, highlight=False)  # noqa: E731
    result, probed = measure(inputs.model, prepare(inputs.data), inputs.space,
                             names=inputs.names, hessian_samples=hessian, seed=seed,
                             joint=joint, say=say)  # fmt: skip
    result.details = inputs.details
    command = command_line(target, flags)
    result.out = write_outputs(result, inputs.out, command)
    files = [CSV, RANKING, PNG, JSON, "report.md"]
    if probed is not None:
        files.append(write_joint(probed, inputs.out, command).name)
    console.print(console_table(result))
    console.print(f"outputs in {result.out}: {', '.join(files)}", highlight=False)
    return result


def cmd_sensitivity(args: argparse.Namespace) -> int:
    flags = {"--load": args.load, "--out": args.out, "--hessian": args.hessian,
             "--seed": args.seed, "--config": args.run_config, "--joint": args.joint}  # fmt: skip
    run_command(args.config, flags, console)
    return 0
