"""Number formats, quantized layers and `quantize_model`."""

from bitscout.quant.apply import QuantPlan, parse_plan, quantize_model, resolve_plan
from bitscout.quant.formats import Integer, NumberFormat, quantize
from bitscout.quant.layers import LayerQuant, QuantConv1d, QuantConv2d, QuantLinear

__all__ = [
    "Integer",
    "LayerQuant",
    "NumberFormat",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "QuantPlan",
    "parse_plan",
    "quantize",
    "quantize_model",
    "resolve_plan",
]
