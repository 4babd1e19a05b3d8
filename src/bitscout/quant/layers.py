"""Quantized layer wrappers: a float layer whose input, weight and bias are fake-quantized."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bitscout.quant import datapath
from bitscout.quant.formats import Integer, NumberFormat, quantize


@dataclass(frozen=True)
class LayerQuant:
    """The formats of one layer's input (`data_in`), weight and bias; None means float.
    `accum` and `result`, when set, are the hardware's accumulator and result types, modeled
    as `bitscout.quant.datapath` describes; None means the exact ones."""

    data_in: NumberFormat | None = None
    weight: NumberFormat | None = None
    bias: NumberFormat | None = None
    accum: Integer | None = None
    result: Integer | None = None

    @property
    def tensors(self) -> dict[str, NumberFormat | None]:
        """The formats of the layer's input, weight and bias, by MASE's names."""
        return {"data_in": self.data_in, "weight": self.weight, "bias": self.bias}


class _QuantMixin:
    quant: LayerQuant
    weight: torch.Tensor
    bias: torch.Tensor | None

    def _quantized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        bias = None if self.bias is None else quantize(self.bias, self.quant.bias)
        return quantize(x, self.quant.data_in), quantize(self.weight, self.quant.weight), bias

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant.accum is None and self.quant.result is None:
            return F.linear(*self._quantized(x))
        return datapath.linear(*self._quantized(x), self.quant.accum, self.quant.result)


class QuantConv1d(_QuantMixin, nn.Conv1d):
    quant: LayerQuant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return datapath.cast_result(self._conv_forward(*self._quantized(x)), self.quant.result)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    quant: LayerQuant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return datapath.cast_result(self._conv_forward(*self._quantized(x)), self.quant.result)


def _conv_from_float(cls: type[nn.Module], layer: nn.Module, quant: LayerQuant) -> nn.Module:
    new = cls(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=layer.bias is not None,
        padding_mode=layer.padding_mode,
    )
    new.quant = quant
    return _copy_state(new, layer)


def _copy_state(new: nn.Module, layer: nn.Module) -> nn.Module:
    """Give `new` copies of `layer`'s parameters, with their dtype, device, mode and grads."""
    new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    new.load_state_dict(layer.state_dict())
    for mine, theirs in zip(new.parameters(), layer.parameters(), strict=True):
        mine.requires_grad_(theirs.requires_grad)
    return new.train(layer.training)


QUANT_TYPES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: QuantLinear,
    nn.Conv1d: QuantConv1d,
    nn.Conv2d: QuantConv2d,
}
TYPE_NAMES: dict[type[nn.Module], str] = {
    nn.Linear: "linear",
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
}


def to_quant(layer: nn.Module, quant: LayerQuant) -> nn.Module:
    """A new quantized copy of a float Linear/Conv layer (the original is untouched)."""
    cls = QUANT_TYPES[type(layer)]
    if cls is QuantLinear:
        return QuantLinear.from_float(layer, quant)  # type: ignore[arg-type]
    return _conv_from_float(cls, layer, quant)
