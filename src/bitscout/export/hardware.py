"""The whole datapath of a quantized model as fixed-point hardware carries it: one type per
node (the input, then every module of the forward chain) and the parameter types of each.

A quantized layer's input format is the result type of the node in front of it (hls4ml casts
a tensor when a node writes it); its accumulator is the exact one (`quant.datapath`) unless the
plan fixes it; its result keeps the accumulator's value. Modules that only pass or pick values
(ReLU, max pooling, dropout, flatten) keep their input's type, so they stay exact. A
BatchNorm takes its input, scale, shift and result in the stand-in type, as bitscout scores it
(`quant.norms`), so it is exact too. Everything else bitscout computes in float (unquantized
layers, other normalizations and activations) gets the stand-in type and is marked `float`:
there the hardware and bitscout differ slightly.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import fx, nn

from bitscout.errors import ConfigError
from bitscout.evaluate.engine.chain import traced_modules
from bitscout.quant.apply import QuantPlan, fx_name, resolve_plan
from bitscout.quant.datapath import exact_accum, fan_in
from bitscout.quant.formats import Integer, NumberFormat
from bitscout.quant.layers import QUANT_TYPES, TYPE_NAMES, LayerQuant
from bitscout.quant.norms import STAND_IN

AP_ROUNDING = {"half_even": "AP_RND_CONV", "half_up": "AP_RND", "floor": "AP_TRN"}
AP_OVERFLOW = {"saturate": "AP_SAT", "wrap": "AP_WRAP"}
# Modules whose outputs are some of their inputs' values (or zero): the input type holds them.
PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Identity, nn.Flatten, nn.MaxPool1d, nn.MaxPool2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
NORM_KINDS = tuple(n.__name__ for n in NORMS)
# Modules hls4ml's PyTorch converter drops (its skip_layers): they make no layer, so neither
# a type nor a layer index; the node before them writes what they pass on.
HLS4ML_SKIPS = ("Dropout",)
# Modules hls4ml computes in place under io_parallel (a Reshape shares its input's variable,
# so its type is its input's): a layer, with no cast of its own.
HLS4ML_IN_PLACE = ("Flatten",)


@dataclass(frozen=True)
class HwType:
    """A signed fixed-point hardware type: the values k / 2**frac_width, k a `width`-bit
    two's-complement integer; `ap_fixed<width, width - frac_width, Q, O>` in hls4ml."""

    width: int
    frac_width: int
    rounding: str = "half_even"
    overflow: str = "saturate"

    @classmethod
    def of(cls, fmt: Integer) -> "HwType":
        return cls(fmt.width, fmt.frac_width, fmt.rounding, fmt.overflow)  # type: ignore[arg-type]

    def integer(self) -> Integer:
        """This type as bitscout's fixed-point format (widths up to the format's limit)."""
        return Integer(self.width, self.frac_width, self.rounding, self.overflow)  # type: ignore[arg-type]

    @property
    def ap_fixed(self) -> str:
        q, o = AP_ROUNDING[self.rounding], AP_OVERFLOW[self.overflow]
        return f"ap_fixed<{self.width},{self.width - self.frac_width},{q},{o}>"

    def describe(self) -> dict[str, Any]:
        return {
            "width": self.width, "frac_width": self.frac_width,
            "integer_width": self.width - self.frac_width, "rounding": self.rounding,
            "overflow": self.overflow, "scale": 2.0**-self.frac_width, "ap_fixed": self.ap_fixed,
        }  # fmt: skip


WIDE = HwType.of(STAND_IN)  # stands in for float: 16 integer and 16 fractional bits, saturating


@dataclass(frozen=True)
class Node:
    """One node of the hardware graph, named as hls4ml (torch.fx) names it."""

    name: str
    path: str | None  # the module's path; None for the model's input
    kind: str  # "input", "linear", "conv1d", "conv2d", or the module's class name
    result: HwType
    params: Mapping[str, HwType] = field(default_factory=dict)
    float_: bool = False  # computed in float by bitscout: the hardware differs slightly
    given: frozenset[str] = frozenset()  # types the plan fixed (the others are computed)
    fan_in: int | None = None


def chain(model: nn.Module) -> tuple[str, list[str]]:
    """The input's name and the module paths the forward calls, one after the other."""
    paths = traced_modules(model)
    if paths is None:
        raise ConfigError(
            "model",
            "export needs a model whose forward is one chain of module calls (an "
            "nn.Sequential, or modules called one after the other); this one branches, "
            "reuses a module or computes outside modules",
        )
    return str(next(iter(fx.symbolic_trace(model).graph.nodes)).name), paths


def hardware(
    model: nn.Module, plan: QuantPlan | Mapping[str, Any], wide: HwType = WIDE
) -> list[Node]:
    """Every node of `model`'s hardware graph for quantization `plan`."""
    input_name, paths = chain(model)
    resolved = resolve_plan(model, plan)
    _fixed_point_only(resolved)
    modules = [model.get_submodule(p) for p in paths]
    wanted = [_wanted(resolved.get(p), m) for p, m in zip(paths, modules, strict=True)] + [None]
    current = HwType.of(wanted[0]) if wanted[0] else wide
    nodes = [Node(input_name, None, "input", current, float_=wanted[0] is None)]
    for i, path in enumerate(paths):
        node = _node(path, modules[i], resolved.get(path), current, wide)
        feeds = wanted[i + 1]
        norm_next = i + 1 < len(paths) and isinstance(modules[i + 1], NORMS)
        if norm_next and _holds(HwType.of(STAND_IN), node.result):
            feeds = None  # a BatchNorm's input cast to the stand-in would change no value
        if feeds is not None:
            node = _feeding(node, HwType.of(feeds), paths[i + 1])
        nodes.append(node)
        current = node.result
    return _skipped(nodes)


def _skipped(nodes: list[Node]) -> list[Node]:
    """The type a skipped or in-place module writes (a quantized layer's data_in) written by
    the node before it instead, where hls4ml casts. A pass-through node then casts after its own
    operation, as bitscout does (ReLU, then the next layer's input cast)."""
    for i in range(len(nodes) - 1, 0, -1):
        node, before = nodes[i], nodes[i - 1]
        passed = HLS4ML_SKIPS + HLS4ML_IN_PLACE
        if node.kind in passed and before.result != node.result:
            consumer = next(n for n in nodes[i:] if n.kind not in passed)
            nodes[i - 1] = _feeding(before, node.result, consumer.path or "")
    return nodes


def _fixed_point_only(resolved: Mapping[str, LayerQuant | None]) -> None:
    """The hardware types, hls4ml's ap_fixed and the integer codes exist for fixed point."""
    for path, quant in resolved.items():
        for tensor, fmt in (quant.tensors if quant else {}).items():
            if fmt is not None and not isinstance(fmt, Integer):
                rule = (f"exports fixed point (integer) formats only; {fx_name(path)}'s "
                        f"{tensor} is {fmt.name}")  # fmt: skip
                raise ConfigError("export", rule)


def _wanted(quant: LayerQuant | None, module: nn.Module) -> Integer | None:
    """The type a node's input must have: a quantized layer's data_in, a BatchNorm's stand-in."""
    if isinstance(module, NORMS):
        return STAND_IN
    return None if quant is None else _fixed(quant.data_in)


def _holds(wide: HwType, narrow: HwType) -> bool:
    """Whether every value of `narrow` is a value of `wide` (no rounding, no overflow)."""
    integer = narrow.width - narrow.frac_width
    return narrow.frac_width <= wide.frac_width and integer <= wide.width - wide.frac_width


def _fixed(fmt: NumberFormat | None) -> Integer | None:
    """`fmt` as fixed point: `_fixed_point_only` has refused every other format already."""
    if fmt is not None and not isinstance(fmt, Integer):
        raise TypeError(f"{fmt.name} reached the fixed-point datapath")
    return fmt


def _feeding(node: Node, data_in: HwType, consumer: str) -> Node:
    """`node` writing the input of a quantized layer: its result is that layer's data_in."""
    if "result" in node.given and node.result != data_in:
        raise ConfigError(
            f"passes.quantize.{node.name}.config.result_width",
            f"a layer's result feeds {fx_name(consumer)} directly, whose data_in format "
            f"differs ({data_in.ap_fixed}); the hardware has one type there",
            node.result.ap_fixed,
        )
    # A BatchNorm's result bitscout casts to the stand-in and the layer then to its data_in;
    # hls4ml casts once: values near a tie of data_in may differ, so it counts as approximate.
    twice = node.kind in NORM_KINDS and data_in != HwType.of(STAND_IN)
    return replace(node, result=data_in, float_=twice)


def _node(
    path: str, module: nn.Module, quant: LayerQuant | None, current: HwType, wide: HwType
) -> Node:
    name, kind = fx_name(path), TYPE_NAMES.get(type(module), type(module).__name__)
    if type(module) in QUANT_TYPES:
        return _layer(name, path, kind, module, quant, current, wide)
    if isinstance(module, PASS_THROUGH):
        return Node(name, path, kind, current)
    if isinstance(module, NORMS):
        norm = HwType.of(STAND_IN)  # as bitscout scores it, whatever the export's stand-in
        return Node(name, path, kind, norm, {"scale": norm, "bias": norm})
    return Node(name, path, kind, wide, float_=True)


def _layer(
    name: str, path: str, kind: str, module: nn.Module, quant: LayerQuant | None,
    current: HwType, wide: HwType,
) -> Node:  # fmt: skip
    q = quant or LayerQuant()
    w, b, a, r = (_fixed(f) for f in (q.weight, q.bias, q.accum, q.result))
    weight = HwType.of(w) if w else wide
    bias = None if module.bias is None else (HwType.of(b) if b else wide)
    n = fan_in(module)
    modes = w or _fixed(q.data_in) or b
    given = frozenset(t for t in ("accum", "result") if getattr(q, t) is not None)
    if a is not None:
        accum = HwType.of(a)
    else:
        exact = exact_accum(current, weight, bias, n)
        accum = HwType(
            exact.width, exact.frac, *((modes.rounding, modes.overflow) if modes else ())
        )
    result = HwType.of(r) if r is not None else accum
    params = {"weight": weight, "accum": accum, **({"bias": bias} if bias else {})}
    float_ = (
        quant is None or q.weight is None or (bias is not None and q.bias is None)
        or (q.data_in is None and current == wide)
    )  # fmt: skip
    if quant is None:
        result = wide  # a float layer's output: keep the types after it ordinary
    return Node(name, path, kind, result, params, float_, given, n)


def float_nodes(nodes: Sequence[Node]) -> list[str]:
    """The nodes bitscout computes in float, which the hardware approximates."""
    return [n.name for n in nodes if n.float_]
