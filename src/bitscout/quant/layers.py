"""Quantized layer wrappers: a float layer whose input, weight and bias are fake-quantized."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from bitscout._core.registry import Registry
from bitscout.quant import datapath
from bitscout.quant.catalog import TENSORS
from bitscout.quant.formats import Integer, NumberFormat, quantize


@dataclass(frozen=True)
class LayerQuant:
    """The formats of one layer's input (`data_in`), weight and bias; None means float.
    `accum` and `result`, when set, are the hardware's accumulator and result types, modeled
    as `bitscout.quant.datapath` describes; None means the exact ones.

    Attributes:
        data_in: the format of the layer's input; None: float.
        weight: the format of its weight; None: float.
        bias: the format of its bias; None: float.
        accum: the fixed-point accumulator each product and the bias are cast to (hls4ml's
            dense arithmetic); None: one wide enough to be exact.
        result: the fixed-point type the sum is cast to; None: the exact one.
    """

    data_in: NumberFormat | None = None
    weight: NumberFormat | None = None
    bias: NumberFormat | None = None
    accum: Integer | None = None
    result: Integer | None = None

    @property
    def tensors(self) -> dict[str, NumberFormat | None]:
        """The formats of the layer's input, weight and bias, by MASE's names."""
        return {t: getattr(self, t) for t in TENSORS}


def sum_dtype(quant: LayerQuant, fan_in: int) -> torch.dtype | None:
    """The dtype in which a layer of `fan_in` products per output sums exactly
    (`datapath.sum_dtype`); None where float32 is exact."""
    return datapath.sum_dtype(quant.data_in, quant.weight, quant.bias, fan_in)


class _QuantMixin:
    quant: LayerQuant
    weight: torch.Tensor
    bias: Any  # the float layer's bias Parameter, or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = sum_dtype(self.quant, datapath.fan_in(self))  # type: ignore[arg-type]
        return datapath.computed_in(dtype, self._arithmetic, *self._quantized(x))

    def _arithmetic(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def _quantized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        bias = None if self.bias is None else quantize(self.bias, self.quant.bias)
        x = quantize(x, self.quant.data_in, clip_grad=True)
        return x, quantize(self.weight, self.quant.weight), bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quant={self.quant}"  # type: ignore[misc]


class QuantLinear(_QuantMixin, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool, quant: LayerQuant) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.quant = quant

    @classmethod
    def from_float(cls, layer: nn.Linear, quant: LayerQuant) -> "QuantLinear":
        return _copy_state(
            cls(layer.in_features, layer.out_features, layer.bias is not None, quant), layer
        )

    def _arithmetic(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if self.quant.accum is None and self.quant.result is None:
            return F.linear(x, weight, bias)
        return datapath.linear(x, weight, bias, self.quant.accum, self.quant.result)


class QuantConv1d(_QuantMixin, nn.Conv1d):
    quant: LayerQuant

    def _arithmetic(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return datapath.cast_result(self._conv_forward(x, weight, bias), self.quant.result)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    quant: LayerQuant

    def _arithmetic(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        return datapath.cast_result(self._conv_forward(x, weight, bias), self.quant.result)


_CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
              "groups", "padding_mode")  # fmt: skip


def _conv_from_float(
    cls: type[QuantConv1d] | type[QuantConv2d], layer: nn.Module, quant: LayerQuant
) -> nn.Module:
    args: dict[str, Any] = {a: getattr(layer, a) for a in _CONV_ARGS}  # as the float layer
    new = cls(**args, bias=layer.bias is not None)
    new.quant = quant
    return _copy_state(new, layer)


M = TypeVar("M", bound=nn.Module)


def _copy_state(new: M, layer: nn.Module) -> M:
    """Give `new` copies of `layer`'s parameters, with their dtype, device, mode and grads.
    A pruned parameter (`torch.nn.utils.prune`: `<name>_orig` and `<name>_mask`) is copied as
    the effective tensor the layer computes with, `orig * mask`."""
    state = effective_state(layer)
    new.to(device=state["weight"].device, dtype=state["weight"].dtype)
    new.load_state_dict(state)
    for name, mine in new.named_parameters():
        theirs = layer._parameters.get(name, layer._parameters.get(f"{name}_orig"))
        mine.requires_grad_(theirs is not None and theirs.requires_grad)
    return new.train(layer.training)


def effective_state(layer: nn.Module) -> dict[str, torch.Tensor]:
    """`layer.state_dict()` with each pruned pair `<name>_orig`, `<name>_mask` replaced by
    `<name>`, their product (what prune's forward pre-hook computes)."""
    state = layer.state_dict()
    for key in [k for k in state if k.endswith("_orig")]:
        name = key.removesuffix("_orig")
        if f"{name}_mask" in state:
            state[name] = (state.pop(key) * state.pop(f"{name}_mask")).detach()
    return state


Wrapper = Callable[[nn.Module, LayerQuant], nn.Module]  # float layer, formats -> quantized copy


@dataclass(frozen=True)
class LayerHandler:
    """How a module type is quantized: its plan type name and its quantized-copy builder."""

    module_type: type[nn.Module]
    name: str
    wrapper: Wrapper


LAYER_HANDLERS: Registry[LayerHandler] = Registry("layer type")
# Views by module type, kept in step by `register_layer_type` (lookups are by exact type).
QUANT_TYPES: dict[type[nn.Module], Wrapper] = {}
TYPE_NAMES: dict[type[nn.Module], str] = {}


def register_layer_type(module_type: type[nn.Module], name: str, wrapper: Wrapper) -> LayerHandler:
    """Make modules of exactly `module_type` quantizable, as plan and space type `name`.

    `wrapper(layer, quant)` returns a new quantized copy of `layer` (the original untouched)
    that fake-quantizes its input, weight and bias as `quant` says; the module needs a
    `weight` (and optional `bias`) parameter.
    """
    if module_type in TYPE_NAMES:
        raise ValueError(f"layer type {module_type.__name__} is registered twice")
    if name == "default":  # a plan's fallback key, never a type
        raise ValueError('a layer type cannot be named "default"')
    handler = LayerHandler(module_type, name, wrapper)
    LAYER_HANDLERS.register(name)(handler)
    QUANT_TYPES[module_type] = wrapper
    TYPE_NAMES[module_type] = name
    return handler


def type_names() -> tuple[str, ...]:
    """Every registered layer type name, in registration order (built-ins first)."""
    return tuple(TYPE_NAMES.values())


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Module path -> layer, for every layer of a registered type in `model`, in module order."""
    return {path: m for path, m in model.named_modules() if type(m) in QUANT_TYPES}


def to_quant(layer: nn.Module, quant: LayerQuant) -> nn.Module:
    """A new quantized copy of a float layer of a registered type (the original is untouched)."""
    return QUANT_TYPES[type(layer)](layer, quant)


register_layer_type(nn.Linear, "linear", QuantLinear.from_float)  # type: ignore[arg-type]
register_layer_type(nn.Conv1d, "conv1d", functools.partial(_conv_from_float, QuantConv1d))
register_layer_type(nn.Conv2d, "conv2d", functools.partial(_conv_from_float, QuantConv2d))
