"""A model seen as a chain of modules, split at its quantizable layers.

The fast path only handles models whose forward is one chain of per-sample modules (every
model in `bitscout.zoo.models`), proven by its fx graph and by the code the trace went through
(`proof`): then the float part in front of the first quantized layer can be
computed once, a quantized layer can be swapped for its arithmetic, and the batch can stand
for several candidates at once (rows `n * g + i` for candidate `i` of `g`).
"""

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from bitscout.evaluate.engine.proof import RecordingTracer, hidden_logic
from bitscout.quant import datapath
from bitscout.quant.apply import quantizable_layers
from bitscout.quant.layers import LayerQuant, sum_dtype
from bitscout.quant.norms import fixed_twin

# Module types that, in eval mode, compute each sample on its own: running several candidates
# stacked along the batch dimension gives each one what it would get alone.
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)
_PER_SAMPLE = (
    *_ELEMENTWISE,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.Linear, nn.Conv1d, nn.Conv2d,
)  # fmt: skip


_FLOAT = LayerQuant()

# CPU matrix kernels work on 16 output features at a time, so a Linear layer with fewer
# outputs wastes most of each vector; W @ x^T runs along the samples instead and is two to
# four times faster there.
NARROW = 16


@dataclass(frozen=True)
class Stage:
    """One quantizable layer and the float modules after it, up to the next such layer."""

    path: str
    layer: nn.Module
    tail: tuple[nn.Module, ...]

    @property
    def stackable(self) -> bool:
        """Whether candidates' weights can be stacked along the output channels: a grouped
        convolution would mix the stacked channels of different candidates."""
        return getattr(self.layer, "groups", 1) == 1

    def layer_op(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
        fmt: LayerQuant = _FLOAT,
    ) -> torch.Tensor:  # fmt: skip
        """The layer's arithmetic with the given (quantized) weight and bias, through the
        accumulator and result types of `fmt` (none: the exact ones); the sum in float64 where
        float32 could not hold it exactly (`datapath.sum_dtype`)."""
        dtype = sum_dtype(fmt, datapath.fan_in(self.layer))
        if dtype is not None and x.dtype != dtype:
            op = functools.partial(self.layer_op, fmt=fmt)
            return datapath.computed_in(dtype, op, x, weight, bias)
        if isinstance(self.layer, nn.Linear) and (fmt.accum or fmt.result) is not None:
            return datapath.linear(x, weight, bias, fmt.accum, fmt.result)
        if fmt.result is not None:
            return datapath.cast_result(self.layer_op(x, weight, bias), fmt.result)
        if isinstance(self.layer, nn.Linear):
            if x.dim() == 2 and len(weight) < NARROW:
                # The result is x @ W^T transposed: a view with samples along its rows.
                return (
                    torch.mm(weight, x.t())
                    if bias is None
                    else torch.addmm(bias[:, None], weight, x.t())
                ).t()
            return F.linear(x, weight, bias)
        if isinstance(self.layer, (nn.Conv1d, nn.Conv2d)):
            return self.layer._conv_forward(x, weight, bias)  # as QuantConv1d/QuantConv2d do
        raise TypeError(f"{self.path}: no arithmetic for {type(self.layer).__name__} layers")


@dataclass(frozen=True)
class Chain:
    """`head` (float modules in front of the first quantizable layer), then the stages."""

    head: tuple[nn.Module, ...]
    stages: tuple[Stage, ...]


def run(modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for module in modules:
        x = module(x)
    return x


def _per_sample(module: nn.Module) -> bool:
    if isinstance(module, nn.Flatten):
        return module.start_dim >= 1
    if isinstance(module, nn.Unflatten):
        return isinstance(module.dim, int) and module.dim >= 1
    return type(module) in _PER_SAMPLE


def _trace(model: nn.Module) -> tuple[fx.Graph, list[nn.Module]] | None:
    """The fx graph of `model.forward` and the modules whose forward the trace went
    through, or None when fx cannot trace it."""
    tracer = RecordingTracer()
    try:
        graph = tracer.trace(model)
    except Exception:  # noqa: BLE001 - fx raises many types; untraceable models run plain
        return None
    return graph, tracer.entered


def _chain_paths(graph: fx.Graph) -> list[str] | None:
    """The module paths of a graph that is one chain of module calls, else None."""
    nodes = list(graph.nodes)
    if len(nodes) < 3 or nodes[0].op != "placeholder" or nodes[-1].op != "output":
        return None
    paths: list[str] = []
    for previous, node in itertools.pairwise(nodes[:-1]):
        if node.op != "call_module" or node.args != (previous,) or node.kwargs:
            return None
        paths.append(str(node.target))
    return paths if nodes[-1].args == (nodes[-2],) else None


def traced_modules(model: nn.Module) -> list[str] | None:
    """The module paths that `model.forward` calls one after the other, or None when the
    forward is anything but a single chain of module calls."""
    traced = _trace(model)
    return None if traced is None else _chain_paths(traced[0])


def trace_chain(model: nn.Module) -> Chain | None:
    """`model` as a Chain, or None when the fast path cannot run it exactly."""
    return chain_of(model)[0]


def chain_of(model: nn.Module) -> tuple[Chain | None, str]:
    """`model` as a Chain, or None and why a model whose trace is a chain still cannot take
    the fast path (`proof.hidden_logic`); the reason is "" for a model that is no chain."""
    traced = _trace(model)
    if traced is None:
        return None, ""
    graph, entered = traced
    paths = _chain_paths(graph)
    quantizable = quantizable_layers(model)
    if paths is None or sorted(p for p in paths if p in quantizable) != sorted(quantizable):
        return None, ""  # a layer called twice or never would break one-format-per-layer
    modules = [model.get_submodule(p) for p in paths]
    if not quantizable or not all(_per_sample(m) for m in modules):
        return None, ""
    hidden = hidden_logic(model, entered)
    if hidden is not None:
        return None, hidden
    # Every candidate is a quantized model, whose BatchNorms compute as the hardware does.
    modules = [fixed_twin(m) for m in modules]
    cuts = [i for i, p in enumerate(paths) if p in quantizable] + [len(paths)]
    stages = tuple(
        Stage(paths[start], modules[start], tuple(modules[start + 1 : end]))
        for start, end in itertools.pairwise(cuts)
    )
    return Chain(head=tuple(modules[: cuts[0]]), stages=stages), ""
