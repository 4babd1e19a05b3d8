"""Metric registry of the quantization search; each metric's docstring is its exact definition
(the FLOP rules are in `profile`)."""

import inspect
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bitscout._core.registry import Registry
from bitscout._core.validate import unknown
from bitscout.errors import ConfigError
from bitscout.evaluate.batched import ClassMajor, correct, cross_entropy
from bitscout.evaluate.overflow import Tally, rate
from bitscout.evaluate.profile import LayerStats, ModelProfile, eval_mode
from bitscout.quant.formats import NumberFormat
from bitscout.quant.layers import LayerQuant

Direction = Literal["maximize", "minimize"]
Kind = Literal["forward", "static", "timing", "model"]
# The user's loss: (outputs, targets) -> the mean over the batch, as a scalar tensor.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FLOAT_BITS = 32
_FLOAT = LayerQuant()  # a float layer stores and computes everything at FLOAT_BITS


@dataclass
class MetricContext:
    """Everything a metric may read; a metric needing a field that is None raises ValueError."""

    profile: ModelProfile
    plan: Mapping[str, LayerQuant | None]
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    model: nn.Module | None = None
    inputs: torch.Tensor | None = None
    data: Any = None  # the validation data as the user gave it (for user metrics)
    loss_fn: LossFn | None = None
    latency_repeats: int = 5
    latency_warmup: int = 1
    latency_budget_s: float = 2.0
    overflow: Tally | None = None  # counted while the candidate ran (`evaluate.overflow`)


# A forward metric that is a mean over samples, batched: the class-major logits of g candidates
# on b samples and their targets -> per candidate, the sum over the b samples.
BatchFn = Callable[[ClassMajor], np.ndarray]


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    direction: Direction
    kind: Kind
    compute: Callable[[MetricContext], float]
    # A forward metric of many candidates at once, equal to `compute` on each one's logits up
    # to the order of floating-point sums.
    batched: BatchFn | None = None

    @property
    def doc(self) -> str:
        """The compute function's docstring: the metric's exact definition."""
        return inspect.getdoc(self.compute) or ""


METRICS: Registry[Metric] = Registry("metric")
MetricFn = Callable[[MetricContext], float]
Decorator = Callable[[MetricFn], MetricFn]


def make_metric(
    name: str,
    fn: MetricFn,
    *,
    unit: str,
    direction: Direction,
    kind: Kind,
    batched: BatchFn | None = None,
) -> Metric:
    """A metric definition, checked (registered or not)."""
    _check(name, direction, kind, batched)
    return Metric(name, unit, direction, kind, fn, batched)


def _is_direction(value: object) -> TypeGuard[Direction]:
    return value in get_args(Direction)


def _check(name: str, direction: str, kind: str, batched: BatchFn | None) -> None:
    if not _is_direction(direction) or kind not in get_args(Kind):
        raise ValueError(f"metric {name!r}: bad direction {direction!r} or kind {kind!r}")
    if batched is not None and kind != "forward":
        raise ValueError(f"metric {name!r}: only forward metrics can be batched")


def metric(
    name: str, *, unit: str, direction: Direction, kind: Kind, batched: BatchFn | None = None
) -> Decorator:
    """Register the decorated `(ctx) -> float` function as metric `name`; returns it unchanged."""
    _check(name, direction, kind, batched)

    def add(fn: MetricFn) -> MetricFn:
        METRICS.register(name)(make_metric(name, fn, unit=unit, direction=direction, kind=kind,
                                           batched=batched))  # fmt: skip
        return fn

    return add


UserFn = Callable[[nn.Module, Any], float]
# The output files' own columns (trials.csv, pareto.csv): a metric of one of these names, or
# starting with one of the prefixes, would write a second column of that name.
RESERVED = ("schema_version", "number", "state", "reason", "cached", "objective", "duration_s",
            "feasible", "proposals")  # fmt: skip
RESERVED_PREFIXES = ("scaled_", "objective_")


def check_name(name: object, key: str) -> None:
    """A user metric's name: a string that is none of the output files' own columns."""
    if not isinstance(name, str) or not name:
        raise ConfigError(key, "a metric's name must be a non-empty string", name)
    if name in RESERVED or name.startswith(RESERVED_PREFIXES):
        reserved = ", ".join(RESERVED)
        rule = (f"is reserved for an output column ({reserved}, and names starting with "
                f"{' or '.join(RESERVED_PREFIXES)}): name the metric otherwise")  # fmt: skip
        raise ConfigError(key, rule, name)


def user_metric(name: str, fn: UserFn, *, direction: str = "maximize", unit: str = "") -> Metric:
    """A metric computed by the user's `fn(quantized_model, data) -> float`, where `data` is
    a private copy of the validation data, in the form the search was given it."""
    check_name(name, f"metrics.{name}")
    if not callable(fn):
        raise ConfigError(f"metrics.{name}", "must be a function (model, data) -> float", fn)
    if not _is_direction(direction):
        raise ConfigError(f"metrics.{name}.direction", "must be 'maximize' or 'minimize'",
                          direction)  # fmt: skip

    def compute(ctx: MetricContext) -> float:
        if ctx.model is None:
            raise ValueError(f"metric {name!r} needs the quantized model in the MetricContext")
        return fn(ctx.model, ctx.data)

    compute.__doc__ = inspect.getdoc(fn) or f"{name}: the user's function {fn!r}"
    return make_metric(name, compute, unit=unit, direction=direction, kind="model")


def user_records(metrics: Iterable[Metric]) -> dict[str, dict[str, str]]:
    """The user's metrics among `metrics` (registered or a search's own), as summary.json
    records them: a run is read back without their functions."""
    return {m.name: {"direction": m.direction, "unit": m.unit} for m in metrics
            if m.kind == "model"}  # fmt: skip


def from_records(records: object, key: str = "summary.json") -> dict[str, Metric]:
    """The metrics `user_records` wrote, with their direction and unit: enough to rank and
    report a run; computing one again needs its function (a ValueError)."""
    if not isinstance(records, Mapping):
        raise ConfigError(f"{key} user_metrics", "must be a table of metrics", records)
    found = {}
    for name, record in records.items():
        where = f"{key} user_metrics.{name}"
        direction = record.get("direction") if isinstance(record, Mapping) else None
        unit = record.get("unit", "") if isinstance(record, Mapping) else None
        if not _is_direction(direction) or not isinstance(unit, str):
            raise ConfigError(where, "needs a direction (maximize or minimize) and a unit", record)

        def absent(ctx: MetricContext, name: str = name) -> float:
            raise ValueError(f"metric {name!r} was read back from a run: pass its function")

        found[name] = make_metric(name, absent, unit=unit, direction=direction, kind="model")
    return found


def get_metric(
    name: str, key: str | None = None, extra: Mapping[str, Metric] | None = None
) -> Metric:
    """Metric `name` among the registered ones and `extra` (a search's own); an unknown name
    is a ConfigError listing the known ones and the closest."""
    if extra and name in extra:
        return extra[name]
    if name not in METRICS:
        known = sorted({*METRICS.names(), *(extra or {})})
        raise ConfigError(key or "metric", unknown("metric", name, known), name)
    return METRICS.get(name, key)


def compute_metrics(
    names: Iterable[str], ctx: MetricContext, extra: Mapping[str, Metric] | None = None
) -> dict[str, float]:
    """Each named metric's value on `ctx` as a Python float (float() refuses a None result)."""
    return {name: float(get_metric(name, extra=extra).compute(ctx)) for name in names}


def _bits(fmt: NumberFormat | None, shape: tuple[int, ...]) -> float:
    """Bits per value of a tensor of `shape` in `fmt` (shared scales amortized); 32 for float."""
    return FLOAT_BITS if fmt is None else fmt.bits_for(shape)


def _planned(ctx: MetricContext) -> list[tuple[LayerStats, LayerQuant | None]]:
    """Each profiled layer with its plan entry; a plan for another model is an error."""
    if set(ctx.plan) != {layer.path for layer in ctx.profile.layers}:
        raise ValueError(f"the plan's layers {sorted(ctx.plan)} are not the model's layers")
    return [(layer, ctx.plan[layer.path]) for layer in ctx.profile.layers]


def _logits_targets(ctx: MetricContext, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if ctx.logits is None or ctx.targets is None:
        raise ValueError(f"metric {name!r} needs logits and targets in the MetricContext")
    logits, targets = ctx.logits.detach(), ctx.targets.detach()
    bad_shape = logits.dim() != 2 or targets.shape != logits.shape[:1] or not len(targets)
    # Float targets would be truncated to classes silently by .long().
    if bad_shape or targets.dtype.is_floating_point or targets.dtype.is_complex:
        got = f"{tuple(logits.shape)} and {tuple(targets.shape)} {targets.dtype}"
        raise ValueError(f"metric {name!r} needs logits [n, classes], integer targets [n]: {got}")
    return logits, targets.long()


def forward_sums(
    names: Iterable[str], logits: torch.Tensor, targets: torch.Tensor
) -> dict[str, np.ndarray]:
    """For the logits [b, g, classes] of g candidates on b samples, each batched forward metric
    among `names` summed over the samples: metric name -> g sums. Such a metric's value is the
    sum over all samples divided by their number. Metrics without a batched form are left out."""
    batched = {m.name: m.batched for m in map(get_metric, names) if m.batched is not None}
    if not batched:
        return {}
    b = len(logits) if logits.dim() == 3 else 0
    integer = not (targets.dtype.is_floating_point or targets.dtype.is_complex)
    if not b or targets.shape != (b,) or not integer:
        got = f"{tuple(logits.shape)} and {tuple(targets.shape)} {targets.dtype}"
        raise ValueError(f"batched metrics need logits [b, g, classes], integer targets [b]: {got}")
    # By candidate and class [g, classes, b], so each step runs over long contiguous rows; the
    # fast engine's last layer gives that layout already (`Runner.logits`), others are copied.
    z = logits.detach().cpu().numpy().transpose(1, 2, 0)
    z = z if z.flags.c_contiguous else np.ascontiguousarray(z)
    block = ClassMajor(z, targets.long().cpu().numpy())
    with np.errstate(all="ignore"):  # inf and NaN logits give inf and NaN metrics, as unbatched
        return {name: fn(block) for name, fn in batched.items()}


@metric("accuracy", unit="fraction", direction="maximize", kind="forward", batched=correct)
def accuracy(ctx: MetricContext) -> float:
    """Top-1 accuracy: the fraction of rows whose largest logit is at the target class."""
    logits, targets = _logits_targets(ctx, "accuracy")
    return (logits.argmax(dim=1) == targets).sum().item() / len(targets)


@metric("loss", unit="nats", direction="minimize", kind="forward", batched=cross_entropy)
def loss(ctx: MetricContext) -> float:
    """Mean cross-entropy of softmax(logits) against the targets, in nats (float64); with a
    user's `loss_fn`, its value on all rows (it must return the mean over its batch)."""
    if ctx.loss_fn is not None:
        if ctx.logits is None or ctx.targets is None:
            raise ValueError("metric 'loss' needs logits and targets in the MetricContext")
        return float(ctx.loss_fn(ctx.logits, ctx.targets))
    logits, targets = _logits_targets(ctx, "loss")
    return F.cross_entropy(logits.double(), targets, reduction="sum").item() / len(targets)


# Forward metrics counted inside the candidate's datapath while it runs, not read from its
# logits: the evaluator's fast and plain paths each fill MetricContext.overflow.
COUNTED = ("overflow_rate",)


@metric("overflow_rate", unit="fraction", direction="minimize", kind="forward")
def overflow_rate(ctx: MetricContext) -> float:
    """The worst tensor's share of values that its format saturates or wraps: over every
    quantized layer's input, weight, bias, accumulator and result (per value of every
    validation row; a weight or bias value once), the largest fraction of values beyond the
    format's range; 0.0 when nothing overflows. A value of an `integer` format overflows when
    its rounded code lies outside the format's codes; the exact rules are in
    `bitscout.evaluate.overflow`."""
    if ctx.overflow is None:
        raise ValueError("metric 'overflow_rate' needs the overflow counted in the MetricContext")
    return rate(ctx.overflow)


@metric("latency", unit="ms", direction="minimize", kind="timing")
def latency(ctx: MetricContext) -> float:
    """Median ms of a full-batch forward over all inputs on one CPU thread: up to `latency_repeats`
    timed runs after `latency_warmup` untimed ones, stopping once `latency_budget_s` is spent (at
    least one). It times the simulated (fake-quantized) model on this CPU, not hardware latency."""
    if ctx.model is None or ctx.inputs is None:
        raise ValueError("metric 'latency' needs model and inputs in the MetricContext")
    if ctx.latency_repeats < 1 or ctx.latency_warmup < 0 or ctx.latency_budget_s < 0:
        raise ValueError("latency needs repeats >= 1, warmup >= 0 and budget_s >= 0")
    threads = torch.get_num_threads()
    # One thread, so candidates are timed alike whatever the machine's core count.
    torch.set_num_threads(1)
    times: list[float] = []
    try:
        with eval_mode(ctx.model), torch.inference_mode():
            for _ in range(ctx.latency_warmup):
                ctx.model(ctx.inputs)
            start = time.perf_counter()
            for _ in range(ctx.latency_repeats):
                t0 = time.perf_counter()
                ctx.model(ctx.inputs)
                times.append(time.perf_counter() - t0)
                if time.perf_counter() - start >= ctx.latency_budget_s:
                    break
    finally:
        torch.set_num_threads(threads)
    return 1000.0 * statistics.median(times)


@metric("model_size", unit="parameters", direction="minimize", kind="static")
def model_size(ctx: MetricContext) -> float:
    """The number of parameters (all of nn.Module.parameters(), BN affine included)."""
    return float(ctx.profile.param_count)


@metric("model_size_bits", unit="bits", direction="minimize", kind="static")
def model_size_bits(ctx: MetricContext) -> float:
    """Bits to store all parameters: each Linear/Conv weight and bias at its format's width
    (32 when float), every other parameter (BatchNorm, ...) at 32 bits."""
    bits = float(FLOAT_BITS * ctx.profile.param_count)  # exact below 2**53 bits
    for layer, quant in _planned(ctx):
        q = quant or _FLOAT
        bits -= layer.weight_count * (FLOAT_BITS - _bits(q.weight, layer.weight_shape))
        bits -= layer.bias_count * (FLOAT_BITS - _bits(q.bias, (layer.bias_count,)))
    return bits


@metric("flops", unit="FLOPs", direction="minimize", kind="static")
def flops(ctx: MetricContext) -> float:
    """FLOPs of one forward of one sample: Linear/Conv 2 * MACs (no bias adds, as FlopCounterMode),
    per output element BatchNorm 2, activations 1, MaxPool kernel elements - 1, AvgPool kernel
    elements, Flatten/Dropout/Identity 0 (see the module docstring). Quantization keeps it."""
    return float(ctx.profile.flops)


@metric("bops", unit="bit operations", direction="minimize", kind="static")
def bops(ctx: MetricContext) -> float:
    """Sum over Linear/Conv layers of MACs * weight bits * input (data_in) bits, where a
    float tensor or float layer counts 32 bits; a shared scale is amortized over the values
    that share it (a binary input's over its whole sample)."""
    planned = [(layer, quant or _FLOAT) for layer, quant in _planned(ctx)]
    return float(sum(
        layer.macs * _bits(q.weight, layer.weight_shape) * _bits(q.data_in, _batch(layer))
        for layer, q in planned
    ))  # fmt: skip


def _batch(layer: LayerStats) -> tuple[int, ...]:
    """The shape of a batch of one of the layer's input samples, the shape `bits_for` takes:
    per-sample scales span everything after the first dimension."""
    return (1, *layer.input_shape)


@metric("average_bitwidth", unit="bits", direction="minimize", kind="static")
def average_bitwidth(ctx: MetricContext) -> float:
    """MASE's: mean weight width over quantized Linear/Conv layers (plan entry not None),
    weighted by weight count, a float weight counting 32; 32.0 when no layer is quantized."""
    quantized = [(s.weight_count, _bits(q.weight, s.weight_shape))
                 for s, q in _planned(ctx) if q is not None]  # fmt: skip
    count = sum(n for n, _ in quantized)
    return sum(n * bits for n, bits in quantized) / count if count else float(FLOAT_BITS)


@metric("memory_density", unit="x", direction="maximize", kind="static")
def memory_density(ctx: MetricContext) -> float:
    """32 / average_bitwidth: how many times denser than float32 the quantized weights are."""
    return FLOAT_BITS / average_bitwidth(ctx)
