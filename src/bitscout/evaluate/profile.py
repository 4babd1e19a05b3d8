"""The float model's structure, measured once per search: its quantizable layers' MACs and
weights, its parameter count and its FLOPs.

FLOPs are per sample over one forward pass: Linear/Conv 2 * MACs (no bias additions, agreeing
with torch's FlopCounterMode); BatchNorm (eval) 2 per output element (it folds into one
multiply-add); ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, GELU, SiLU 1 per output element; MaxPool
kernel elements - 1 and AvgPool kernel elements per output element; Flatten, Unflatten,
Dropout, Identity 0. Everything else (LayerNorm, attention, custom modules, arithmetic inline
in a `forward`) counts what `torch.utils.flop_counter.FlopCounterMode` counts there: matrix
products and convolutions, with elementwise work counted 0. Quantization does not change FLOPs.
"""

import contextlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bitscout.evaluate.engine.chain import traced_modules
from bitscout.quant.apply import quantizable_layers
from bitscout.quant.layers import TYPE_NAMES

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)
_FREE = (nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_COUNTED = (*_ACTIVATIONS, *_FREE, *_NORMS, nn.Linear, *_CONVS, *_MAX_POOLS, *_AVG_POOLS)


@dataclass(frozen=True)
class LayerStats:
    """One Linear/Conv1d/Conv2d layer, as seen in a float forward pass of one sample."""

    path: str
    type: str
    macs: int
    weight_count: int
    bias_count: int
    weight_shape: tuple[int, ...] = ()
    input_shape: tuple[int, ...] = ()  # of one sample: what a format's shared scales span


@dataclass(frozen=True)
class ModelProfile:
    """The float model's structure, computed once per search."""

    layers: tuple[LayerStats, ...]
    param_count: int
    flops: int


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block, then every module's own training flag back as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _leaf_flops(module: nn.Module, out: torch.Tensor) -> int:
    n = out.numel()
    if isinstance(module, nn.Linear):
        return 2 * n * module.in_features
    if isinstance(module, _CONVS):
        return 2 * n * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, _NORMS + _ACTIVATIONS):
        return n * (2 if isinstance(module, _NORMS) else 1)
    if isinstance(module, _MAX_POOLS + _AVG_POOLS):
        k = module.kernel_size
        # An int kernel spans every spatial dim of the (batch, channels, *spatial) output.
        elements = k ** (out.dim() - 2) if isinstance(k, int) else math.prod(k)
        return n * (elements - 1 if isinstance(module, _MAX_POOLS) else elements)
    return 0  # the rest of _COUNTED (_FREE) only moves or masks values


def _record(
    flops: dict[str, int], shapes: dict[str, tuple[int, ...]], path: str, module: nn.Module,
    inputs: tuple, output: object,
) -> None:  # fmt: skip
    out = output[0] if isinstance(output, tuple) else output  # pools may return indices too
    if isinstance(out, torch.Tensor):
        flops[path] += _leaf_flops(module, out)
    if inputs and isinstance(inputs[0], torch.Tensor):
        shapes[path] = tuple(inputs[0].shape[1:])


def _flops_by_path(
    model: nn.Module, sample: torch.Tensor, shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, int], int]:
    """FLOPs per counted leaf module path in one float forward of `sample`, and the FLOPs that
    FlopCounterMode sees outside the counted Linear/Conv layers (attention products, custom
    modules, inline matrix products). Each module's input shape goes into `shapes`."""
    leaves: dict[str, nn.Module] = {
        p: m
        for p, m in model.named_modules()
        if next(m.children(), None) is None and isinstance(m, _COUNTED)
    }
    flops = dict.fromkeys(leaves, 0)
    # A chain of counted modules does nothing the rules miss; anything else may (custom
    # modules, inline products), which FlopCounterMode sees. It costs 1.6 s of imports
    # (torch._dynamo), so it is only used when needed.
    counter = None if _counted_chain(model, leaves) else FlopCounterMode(display=False)
    hooks = {p: partial(_record, flops, shapes, p) for p in leaves}
    handles = [m.register_forward_hook(hooks[p]) for p, m in leaves.items()]
    try:
        with eval_mode(model), torch.inference_mode(), counter or contextlib.nullcontext():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    if counter is None:
        return flops, 0
    # FlopCounterMode counts matrix products and convolutions only, which outside the other
    # counted leaves are exactly the Linear/Conv layers counted here already.
    products = sum(f for p, f in flops.items() if isinstance(leaves[p], (nn.Linear, *_CONVS)))
    return flops, max(0, counter.get_total_flops() - products)


def _counted_chain(model: nn.Module, leaves: dict[str, nn.Module]) -> bool:
    """Whether `model`'s forward is one chain of calls to counted leaf modules."""
    paths = traced_modules(model)
    return paths is not None and all(p in leaves for p in paths)


def profile_model(model: nn.Module, sample: torch.Tensor) -> ModelProfile:
    """Layer stats, parameter count and FLOPs of the float `model` (left as it was) on one row."""
    if sample.dim() < 1 or sample.shape[0] != 1:
        raise ValueError(f"profile_model needs a batch of one, got shape {tuple(sample.shape)}")
    shapes: dict[str, tuple[int, ...]] = {}
    flops, rest = _flops_by_path(model, sample, shapes)
    layers = tuple(
        # A Linear/Conv layer's FLOPs are 2 * MACs by definition.
        _layer_stats(path, m, flops.get(path, 0) // 2, shapes.get(path, ()))
        for path, m in quantizable_layers(model).items()
    )
    params = sum(p.numel() for p in model.parameters())
    return ModelProfile(layers, params, sum(flops.values()) + rest)


def _layer_stats(
    path: str, layer: nn.Module, macs: int, input_shape: tuple[int, ...]
) -> LayerStats:
    # A registered layer type promises a weight tensor and a bias tensor or None.
    weight, bias = layer.weight, layer.bias
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{path}: {type(layer).__name__}.weight is not a tensor")
    bias_count = bias.numel() if isinstance(bias, torch.Tensor) else 0
    shape = tuple(weight.shape)
    return LayerStats(
        path, TYPE_NAMES[type(layer)], macs, weight.numel(), bias_count, shape, input_shape
    )
