"""`bitscout.sensitivity(model, data, space)`: what each searched choice costs on its own.

A probe applies one choice of one dimension to the one tensor it belongs to, leaving every
other tensor and layer float, and measures the model: the cost is the sum of the choices over
the dimensions, not their product. With `hessian_samples`, each layer also gets Hutchinson's
estimate of the Hessian trace of the loss (HAWQ-v2's signal).

(The module is not called `sensitivity`: importing `bitscout.sensitivity` as a module would
hide the function of that name on the package.)
"""

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console
from torch import nn

from bitscout._core.files import output_dir
from bitscout._core.validate import SEED_MAX
from bitscout.analysis.sensitivity_joint import FILE as JOINT_FILE
from bitscout.analysis.sensitivity_joint import (
    check_joint,
    joint_metrics,
    measure_joint,
    write_joint,
)
from bitscout.data.containers import MAX_BYTES, EvalData, prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import Evaluator, LossFn
from bitscout.evaluate.forward import floating_dtype
from bitscout.evaluate.hessian import HessianTrace, hessian_traces
from bitscout.evaluate.metrics import Metric
from bitscout.quant.apply import QuantPlan, copy_model, parse_layer_config, resolve_plan
from bitscout.quant.catalog import DATAPATH, TENSORS
from bitscout.quant.layers import LayerQuant
from bitscout.quant.plan import governing_keys
from bitscout.quant.space import Choice, Dimension, LayerChoices, SearchSpace
from bitscout.results.console import log_console
from bitscout.results.sensitivity import (
    FLOAT_ROW,
    SensitivityResult,
    ranking,
    write_outputs,
)
from bitscout.study.inputs import read_space, user_metrics

Say = Callable[[str], None]


@dataclass(frozen=True)
class Probe:
    """One choice applied alone: `table` is the probed layer key's config table (the choice,
    the first choice of the same tensor's other fields, the layer's shared fields)."""

    layer: str  # the layer key: a layer's fx name, or a type with `by = "type"`
    tensor: str  # data_in, weight, bias, accum, result, or "layer" (name, shared fields)
    dimension: str
    choice: Choice
    format: str
    table: Mapping[str, Choice]

    @property
    def fields(self) -> str:
        """The probed fields as text: `weight_width=4 weight_frac_width=2`."""
        return " ".join(f"{k}={v}" for k, v in self.table.items() if k != "name")


def tensor_of(field: str) -> str:
    """The tensor a layer table's field sets; "layer" for `name` and shared fields."""
    return next((t for t in (*TENSORS, *DATAPATH) if field.startswith(f"{t}_")), "layer")


def _kept(field: str, tensor: str) -> bool:
    """Whether a probe of `tensor` keeps `field` of the layer table (the rest: float)."""
    owner = tensor_of(field)
    if tensor == "layer" or owner in ("layer", tensor):
        return True  # name and shared fields (rounding, ...) shape every quantized tensor
    return tensor in DATAPATH and owner in TENSORS  # an accumulator's grid is its operands'


def _layer_probes(lc: LayerChoices, d: Dimension) -> Iterator[Probe]:
    """Every choice of `d`: under each format it is searched with (a `name` choice is the
    format itself), the other fields at their first choice."""
    formats = [None] if d.field == "name" else (d.formats or (lc.table["name"][0],))
    for fmt in formats:
        for choice in d.choices:
            values = {"name": choice} if fmt is None else {"name": fmt, d.field: choice}
            if not lc.allows(values):
                continue  # a choice or combination the chosen format skips
            full = lc.table_for(values)
            tensor = tensor_of(d.field)
            table = {k: v for k, v in full.items() if k == "name" or _kept(k, tensor)}
            yield Probe(lc.key, tensor, d.name, choice, str(table["name"]), table)


def probes(space: SearchSpace) -> list[Probe]:
    """The probes of `space`, in model order: for a space without format choices, one per
    choice of every dimension."""
    by_key = {lc.key: lc for lc in space.layers}
    return [p for d in space.dimensions for p in _layer_probes(by_key[d.layer], d)]


def probe_plan(space: SearchSpace, probe: Probe) -> dict[str, LayerQuant | None]:
    """Formats per layer path with only `probe` applied. Every other layer key is named float
    explicitly: by type, a `default` key would otherwise reach the typed layers too."""
    layers: dict[str, LayerQuant | None] = dict.fromkeys(lc.key for lc in space.layers)
    layers[probe.layer] = parse_layer_config(probe.table, probe.layer)
    return resolve_plan(space.types, QuantPlan(by=space.by, layers=layers))  # type: ignore[arg-type]


def governed(space: SearchSpace) -> dict[str, list[str]]:
    """Searched layer key -> the module paths it configures (several for a type key)."""
    searched = {d.layer for d in space.dimensions}
    keys = [lc.key for lc in space.layers if lc.key in searched]
    found: dict[str, list[str]] = {k: [] for k in keys}  # in model order
    for path, key in governing_keys(space.types, space.fields, space.by).items():
        if key in found:
            found[key].append(path)
    return found


def _row(probe: Probe, metrics: Mapping[str, float]) -> dict[str, Any]:
    return {"layer": probe.layer, "tensor": probe.tensor, "dimension": probe.dimension,
            "choice": probe.choice, "format": probe.format, "fields": probe.fields,
            **metrics}  # fmt: skip


def _with_changes(rows: list[dict[str, Any]], base: Mapping[str, float]) -> pd.DataFrame:
    """The probes' rows with the float row first and each row's change from float."""
    float_row = {"layer": FLOAT_ROW, "tensor": "", "dimension": "", "choice": "", "format": "",
                 "fields": "", **base}  # fmt: skip
    table = pd.DataFrame([float_row, *rows])
    if "accuracy" in table:
        table["accuracy_drop"] = base["accuracy"] - table["accuracy"]
    if "loss" in table:
        table["loss_increase"] = table["loss"] - base["loss"]
    return table


def run_probes(
    evaluator: Evaluator, space: SearchSpace, say: Say
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Evaluate the float model and every probe: sensitivity.csv's rows (without its
    schema_version) and the float model's metrics. Says one line per layer key."""
    base = evaluator.evaluate_plan(dict.fromkeys(space.types))
    rows: list[dict[str, Any]] = []
    seen: dict[tuple, dict[str, float]] = {}  # a probe that two dimensions share runs once

    def metrics(p: Probe) -> dict[str, float]:
        key = (p.layer, tuple(p.table.items()))
        if key not in seen:
            seen[key] = evaluator.evaluate_plan(probe_plan(space, p))
        return seen[key]

    for key, group in _by_layer(probes(space)):
        start = time.perf_counter()
        found = [_row(p, metrics(p)) for p in group]
        rows += found
        say(f"{key}: {len(found)} probes in {time.perf_counter() - start:.2f} s, "
            f"{_worst(found, base)}")  # fmt: skip
    return _with_changes(rows, base), base


def _by_layer(found: list[Probe]) -> Iterator[tuple[str, list[Probe]]]:
    keys = dict.fromkeys(p.layer for p in found)
    for key in keys:
        yield key, [p for p in found if p.layer == key]


def _worst(rows: list[dict[str, Any]], base: Mapping[str, float]) -> str:
    """`largest accuracy drop 12.50 points` (or loss increase, for a model without accuracy)."""
    if "accuracy" in base:
        worst = max(base["accuracy"] - r["accuracy"] for r in rows) * 100
        return f"largest accuracy drop {worst:.2f} points"
    return f"largest loss increase {max(r['loss'] - base['loss'] for r in rows):.4g} nats"


def metric_names(
    data: EvalData, names: Sequence[str], extra: Mapping[str, Metric], loss_fn: LossFn | None
) -> list[str]:
    """Accuracy where the targets are classes, the loss (cross-entropy needs classes, else
    the Evaluator says to pass `loss_fn`), then the metrics asked for."""
    _, y = next(iter(data.batches()))
    classes = not y.is_floating_point() and y.dim() == 1
    base = ["accuracy", "loss"] if classes else ["loss"]
    return list(dict.fromkeys([*base, *names, *extra]))


def measure(
    model: nn.Module,
    data: EvalData,
    space: SearchSpace,
    *,
    names: Sequence[str] = (),
    extra: Mapping[str, Metric] | None = None,
    loss_fn: LossFn | None = None,
    hessian_samples: int = 0,
    seed: int = 0,
    joint: bool = False,
    say: Say = lambda message: None,
) -> tuple[SensitivityResult, dict[str, Any] | None]:
    """The work behind `sensitivity` and `bitscout sensitivity`: probes, Hessian traces and the
    ranking of layers, and with `joint` the ILP's probes (sensitivity_joint.json's content),
    nothing written."""
    start = time.perf_counter()
    extra = dict(extra or {})
    wanted = metric_names(data, names, extra, loss_fn)
    scored = joint_metrics(wanted) if joint else wanted
    evaluator = Evaluator(model, space, data, scored, extra=extra, loss_fn=loss_fn)
    timing = [m for m in evaluator.metrics if evaluator.get(m).kind == "timing"]
    if timing:
        raise ConfigError("metrics", "latency is not measured per probe", timing[0])
    say(f"probing {len(probes(space))} choices one at a time on {data.rows} rows")
    table, base = run_probes(evaluator, space, say)
    # the usual outputs keep their metrics: the joint probes' others stay in their file
    kept = [evaluator.get(m).name for m in wanted]
    table = table.drop(columns=[m for m in evaluator.metrics if m not in kept])
    base = {m: base[m] for m in kept}
    found = measure_joint(evaluator, space, say) if joint else None
    traces: dict[str, HessianTrace] = {}
    if hessian_samples:
        clock = time.perf_counter()
        traces = hessian_traces(evaluator.model, data, governed(space), hessian_samples, seed,
                                loss_fn)  # fmt: skip
        say(f"Hessian traces of {len(traces)} layers from {hessian_samples} samples in "
            f"{time.perf_counter() - clock:.2f} s")  # fmt: skip
    units = {m: evaluator.get(m).unit for m in kept}
    return SensitivityResult(table, ranking(table, traces), base, units, data.rows,
                             hessian_samples, seed, time.perf_counter() - start), found  # fmt: skip


def check_int(value: object, name: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(name, f"must be an integer in {lo}..{hi}", value)
    return value


def _metric_args(metrics: Sequence[str] | Mapping[str, Any] | None) -> tuple[list, dict]:
    """`metrics`: names of registered metrics, or the user's own as `search` takes them."""
    if metrics is None:
        return [], {}
    if isinstance(metrics, Mapping):
        return [], user_metrics(metrics)
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise ConfigError("metrics", "must be a list of metric names or a dict name -> fn",
                          metrics)  # fmt: skip
    return list(metrics), {}


def sensitivity(
    model: nn.Module,
    data: Any,
    space: Mapping[str, Any] | str | Path | SearchSpace,
    *,
    metrics: Sequence[str] | Mapping[str, Any] | None = None,
    hessian_samples: int = 0,
    seed: int = 0,
    joint: bool = False,
    out: str | Path | None = None,
    loss_fn: LossFn | None = None,
    device: str | torch.device = "cpu",
    max_data_bytes: int = MAX_BYTES,
    show: bool = False,
    quiet: bool = False,
) -> SensitivityResult:
    """How sensitive each searched layer of `model` (never modified) is on validation `data`:
    every choice of every dimension of `space` applied alone, the rest float.

    Args:
        model: any float `torch.nn.Module`; a copy is probed.
        data: validation data in the forms `bitscout.search` takes.
        space: the `[search.search_space]` table, a TOML file holding it, or a SearchSpace.
        metrics: registered metric names besides accuracy and loss, or your own
            (`{"name": fn}`, as `search` takes them).
        hessian_samples: > 0 adds each layer's Hutchinson estimate of the Hessian trace of the
            loss from that many Rademacher samples (an integer in `0..10**6`; default 0: none).
        seed: seeds the Hessian samples (an integer in `0..2**32-1`).
        joint: also measure the `ilp` strategy's probes (its reference candidate, and the
            reference with one tensor's joint choice of its fields changed) on every metric
            a search reports, into `out`'s sensitivity_joint.json, which an `ilp` search of
            the same model, data and space reuses instead of evaluating them (needs `out`).
        out: a directory for sensitivity.csv, sensitivity_ranking.csv, sensitivity.json,
            sensitivity.png and report.md; None writes nothing.
        loss_fn: replaces cross-entropy, as in `search`.
        device: where to evaluate.
        max_data_bytes: data above this is read batch by batch.
        show: print progress on stdout; by default it goes to the "bitscout" logger at INFO.
        quiet: print nothing, even with `show`.

    Returns:
        A SensitivityResult: `.table` (one row per probe), `.ranking`, `.float_metrics`
        (the joint probes are in `out`'s sensitivity_joint.json only).

    Raises:
        ConfigError: a bad argument, space or metric.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError("model", "must be a torch.nn.Module", type(model).__name__)
    names, extra = _metric_args(metrics)
    check_int(hessian_samples, "hessian_samples", 0, 10**6)
    check_int(seed, "seed", 0, SEED_MAX)
    if not isinstance(joint, bool):
        raise ConfigError("joint", "must be True or False", joint)
    if joint and out is None:
        raise ConfigError("joint", "needs out=: its probes go to out's " + JOINT_FILE, True)
    dtype = floating_dtype(model)
    where = None if out is None else output_dir(out, "out")  # before the work
    held = prepare(data, dtype=dtype, device=device, max_bytes=max_data_bytes)
    found = space if isinstance(space, SearchSpace) else read_space(space, model)
    if joint:
        check_joint(found, "joint")
    model = copy_model(model).eval()  # the caller's model keeps even its training flag
    console = Console(quiet=True) if quiet else Console() if show else log_console()
    say = lambda message: console.print(message, highlight=False)  # noqa: E731
    result, probed = measure(model, held, found, names=names, extra=extra, loss_fn=loss_fn,
                             hessian_samples=hessian_samples, seed=seed, joint=joint,
                             say=say)  # fmt: skip
    if where is not None:
        command = "bitscout.sensitivity(...) in Python"
        result.out = write_outputs(result, where, command)
        if probed is not None:
            write_joint(probed, where, command)
    return result
