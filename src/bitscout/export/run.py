"""`bitscout.export(result_or_run_dir, to=[...])`: a config of a search (or any plan) written
as the artifacts a hardware flow takes, optionally checked against hls4ml's C++ emulation.
`bitscout export RUN_DIR` maps its flags onto the same code and prints what it returns."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from bitscout._core.files import write_text
from bitscout._core.toml import read_toml
from bitscout.data.containers import prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.forward import floating_dtype
from bitscout.export.artifacts import write_checkpoint, write_npz, write_precision
from bitscout.export.hardware import Node, hardware
from bitscout.export.hls4ml import to_hls4ml, verify, write_hls4ml
from bitscout.export.project import DEFAULTS, HlsOptions, hls_options
from bitscout.export.qonnx import qonnx_model, verify_qonnx, write_qonnx
from bitscout.export.rows import validation_rows
from bitscout.quant.apply import QuantPlan, copy_model, parse_plan
from bitscout.results.rundir import Run, load_run
from bitscout.study.finetune import is_finetuned, load_finetuned
from bitscout.study.result import inputs_of

TARGETS = ("hls4ml", "checkpoint", "npz", "qonnx")
FIXED_POINT = ("hls4ml", "checkpoint", "npz")  # the targets of precision.json's types


@dataclass(frozen=True)
class Subject:
    """What is exported: the float model, the plan, validation rows (hls4ml's input shape, its
    test bench and the rows `verify` runs; None when unknown), a label and the config the
    model was built from (both named in convert_hls4ml.py)."""

    model: nn.Module
    plan: QuantPlan | Mapping[str, Any]
    x: torch.Tensor | None
    label: str  # "trial 12", "best.toml", "the best config", a --quant file
    source: str | None = None


@dataclass(frozen=True)
class ExportResult:
    """What `bitscout.export` wrote.

    Attributes:
        out: the directory written.
        files: every file written, in order.
        nodes: the datapath's hardware graph, one node per layer as hls4ml (torch.fx) names
            it, with the fixed-point type of its result and parameters.
        label: which config was exported: "the best config", "trial 12", "best.toml", ...
        verify: with `verify=True`, hls4ml's C++ emulation (and QONNX's executor) against
            bitscout, what verify.json holds; None otherwise.
    """

    out: Path
    files: list[Path]
    nodes: list[Node]
    label: str
    verify: dict[str, Any] | None = None


class Exportable(Protocol):
    """A search result that can be exported (`SearchResult` is one)."""

    @property
    def out(self) -> Path | None: ...

    def float_model(self) -> nn.Module: ...

    def plan(self, trial: int | None = None) -> dict[str, Any]: ...

    def inputs(self) -> torch.Tensor | None: ...


def parse_targets(to: str | Sequence[str], key: str = "to") -> list[str]:
    """`hls4ml`, `checkpoint`, `npz`, `qonnx`, a list of them, or several joined by commas."""
    given = to.split(",") if isinstance(to, str) else list(to)
    targets = [t.strip() for t in given if isinstance(t, str) and t.strip()]
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets or len(targets) != len(given):
        text = to if isinstance(to, str) else ",".join(map(str, given))
        raise ConfigError(key, f"must be one or more of {', '.join(TARGETS)}", text)
    return targets


def write_targets(
    subject: Subject, targets: Sequence[str], out: Path, hls: HlsOptions = DEFAULTS,
    rows: int = 2000,
) -> ExportResult:  # fmt: skip
    """Each target's files in `out` (precision.json always); hls4ml's test bench holds the
    first `rows` validation rows."""
    model, plan = subject.model, subject.plan
    if "qonnx" in targets:  # a format QONNX cannot express: refused before writing
        validation_rows(subject, "qonnx")
        qonnx_model(model, plan)
    fixed = any(t in FIXED_POINT for t in targets)
    nodes = hardware(model, plan) if fixed else []
    config = None  # hls4ml's, made first: a plan hls4ml cannot run is refused before writing
    if "hls4ml" in targets:
        shape = tuple(validation_rows(subject, "hls4ml").shape[1:])
        config = to_hls4ml(model, plan, shape, options=hls)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_precision(model, plan, out / "precision.json")] if fixed else []
    if "hls4ml" in targets or "checkpoint" in targets:
        files.append(write_checkpoint(model, plan, out / "quantized.pt"))
    if "npz" in targets:
        files.append(write_npz(model, plan, out / "codes.npz"))
    if config is not None:
        x = validation_rows(subject, "hls4ml")[:rows]
        about = (subject.label, subject.source)
        files += write_hls4ml(model, plan, x, config, out, hls, about)
    if "qonnx" in targets:
        files.append(write_qonnx(subject, out))
    return ExportResult(out, files, nodes, subject.label)


def check(
    subject: Subject, out: Path, rows: int, hls: HlsOptions = DEFAULTS,
    targets: Sequence[str] = ("hls4ml",),
) -> dict[str, Any]:  # fmt: skip
    """hls4ml's C++ emulation (with the project's IO type, strategy and reuse factor) against
    bitscout on the first `rows` validation rows, unless QONNX alone is exported; with
    `qonnx`, QONNX's executor on model.onnx as well (under `qonnx`). Also written to
    verify.json."""
    found: dict[str, Any] = {}
    if "hls4ml" in targets or "qonnx" not in targets:
        x = validation_rows(subject, "verify")[:rows]
        shape = tuple(x.shape[1:])
        found = verify(subject.model, subject.plan, x, out / "hls4ml_prj", shape, hls)
    if "qonnx" in targets:
        found["qonnx"] = verify_qonnx(subject, out, rows)
    write_text(out / "verify.json", json.dumps(found, indent=2) + "\n")
    return found


def check_rows(rows: Any, key: str = "rows") -> None:
    """The rows `verify` runs: refused before anything is written or compiled."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ConfigError(key, "must be an integer >= 1", rows)


def quant_file(path: str | Path) -> QuantPlan:
    """The `[passes.quantize]` table of a TOML file (best.toml, a --quant file)."""
    table = read_toml(path).get("passes", {}).get("quantize")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: passes.quantize", "table is required", file=True)
    try:
        return parse_plan(table)
    except ConfigError as err:  # the key belongs to that file, not the config
        raise ConfigError(f"{path}: {err.key}", err.rule, err.value, file=True) from err


def run_plan(run: Run, trial: int | None, key: str = "trial") -> tuple[Any, str]:
    """Trial `trial`'s plan of a run directory, or its best.toml's; and its label."""
    if trial is not None:
        return run.trial_plan(trial, key), f"trial {trial}"
    if run.path is None:
        raise ConfigError(key, "a run concluded in memory has no best.toml: give a trial")
    return quant_file(run.path / "best.toml"), "best.toml"


def run_subject(run_dir: Path, trial: int | None, model: nn.Module | None, data: Any) -> Subject:
    """A run directory's plan with the float model (`model`: the searched model, or its
    architecture when the run recorded a checkpoint, loaded into a copy)."""
    if model is None:
        rule = (
            "is needed to export a run directory from Python: the float model (or its "
            "architecture); `bitscout export RUN_DIR` builds it from the run's config"
        )
        raise ConfigError("model", rule)
    if is_finetuned(run_dir):
        float_model, plan, label = finetuned_subject(run_dir, trial, copy_model(model))
    else:
        run = load_run(run_dir)
        float_model = run.float_model(lambda: copy_model(model))
        plan, label = run_plan(run, trial)
    dtype = floating_dtype(model)
    x = None if data is None else inputs_of(prepare(data, dtype=dtype))
    return Subject(float_model, plan, x, label)


def finetuned_subject(
    path: Path, trial: int | None, architecture: nn.Module, key: str = "trial"
) -> tuple[nn.Module, Any, str]:
    """A fine-tuned directory's float model (its model.pt in `architecture`), its best.toml's
    plan and a label: it holds one config, so no trial is chosen."""
    if trial is not None:
        raise ConfigError(key, f"does not apply to a fine-tuned directory ({path})", trial)
    model, plan = load_finetuned(path, architecture)
    return model, plan, f"fine-tuned {path.name}"


def default_out(run_dir: Path, trial: int | None) -> Path:
    """Where `bitscout export RUN_DIR` writes unless told: RUN_DIR/export(_trial_N)."""
    return run_dir / ("export" if trial is None else f"export_trial_{trial}")


def export(
    result_or_run_dir: "Exportable | str | Path",
    to: str | Sequence[str] = ("checkpoint",),
    out: str | Path | None = None,
    *,
    trial: int | None = None,
    verify: bool = False,
    rows: int = 2000,
    model: nn.Module | None = None,
    data: Any = None,
    part: str = DEFAULTS.part,
    clock_period: float = DEFAULTS.clock_period,
    io_type: str = DEFAULTS.io_type,
    strategy: str = DEFAULTS.strategy,
    reuse_factor: int = DEFAULTS.reuse_factor,
) -> ExportResult:
    """Write the best config (or trial `trial`'s) of a search as hardware artifacts.

    Args:
        result_or_run_dir: a `SearchResult`, a run directory (`out=` of a search) or a
            fine-tuned directory (`bitscout.finetune(out=...)`, RUN_DIR/finetune/trial_N):
            its model.pt's weights with its best.toml.
        to: targets, any of "hls4ml", "checkpoint", "npz", "qonnx" (a list, or joined by
            commas). precision.json is written with every fixed-point target (all but qonnx).
        out: the directory to write; default RUN_DIR/export (RUN_DIR/export_trial_N).
        trial: export this trial's config instead of the best.
        verify: compile hls4ml's C++ emulation and compare it with bitscout (needs hls4ml
            and g++), and with `qonnx` run model.onnx through QONNX's executor; the figures
            are returned and written to verify.json (QONNX's under "qonnx").
        rows: validation rows to verify on, and to write to hls4ml's test bench (tb_data/).
        model: for a run directory, the float model searched (or its architecture, when the
            run recorded a checkpoint: its weights are loaded into a copy, checksum checked).
        data: for a run directory, validation rows (the forms `search` takes), needed by
            hls4ml (the input shape, the test bench) and `verify`.
        part: the hls4ml project's FPGA part (default hls4ml 1.3.0's,
            "xcvu13p-flga2577-2-e"). This and the next four are hls4ml's project settings;
            `verify` checks them: a setting under which hls4ml would compute otherwise than
            bitscout is refused.
        clock_period: the clock period in ns (default 5).
        io_type: "io_parallel" (default) or "io_stream".
        strategy: hls4ml's strategy, "latency" (default) or "resource".
        reuse_factor: every quantized layer's reuse factor (default 1).

    Returns:
        An ExportResult: the files written, the datapath's types per node, the verify figures.

    Raises:
        ConfigError: an unknown target, `rows` not an integer >= 1, a bad hls4ml setting, no
            `out` for a search that wrote no run directory, a run directory that is not a
            finished search, or no such trial.
    """
    targets = parse_targets(to)
    check_rows(rows)
    hls = hls_options(part, clock_period, io_type, strategy, reuse_factor)
    run_dir: Path | None
    if isinstance(result_or_run_dir, str | Path):
        run_dir = Path(result_or_run_dir)
        subject = run_subject(run_dir, trial, model, data)
    else:
        run_dir = result_or_run_dir.out
        subject = result_subject(result_or_run_dir, trial)
    if out is not None:
        where = Path(out)
    elif run_dir is not None:
        where = default_out(run_dir, trial)
    else:
        raise ConfigError("out", "is required: the search wrote no run directory")
    found = write_targets(subject, targets, where, hls, rows)
    if verify:
        found = ExportResult(where, found.files, found.nodes, found.label,
                             check(subject, where, rows, hls, targets))  # fmt: skip
    return found


def result_subject(result: Exportable, trial: int | None) -> Subject:
    label = "the best config" if trial is None else f"trial {trial}"
    return Subject(result.float_model(), result.plan(trial), result.inputs(), label)
