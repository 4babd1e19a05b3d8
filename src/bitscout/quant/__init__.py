"""Number formats, quantized layers and `quantize_model`."""

from bitscout.quant.apply import QuantPlan, parse_plan, quantize_model, resolve_plan
from bitscout.quant.binary import Binary, Ternary
from bitscout.quant.blocks import MXFP, BlockFP, MXInt
from bitscout.quant.catalog import FORMATS
from bitscout.quant.floats import Log, MinifloatDenorm, MinifloatIEEE
from bitscout.quant.formats import Field, Integer, NumberFormat, quantize, register_format
from bitscout.quant.layers import LayerQuant, QuantConv1d, QuantConv2d, QuantLinear

__all__ = [
    "FORMATS",
    "MXFP",
    "Binary",
    "BlockFP",
    "Field",
    "Integer",
    "LayerQuant",
    "Log",
    "MXInt",
    "MinifloatDenorm",
    "MinifloatIEEE",
    "NumberFormat",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "QuantPlan",
    "Ternary",
    "parse_plan",
    "quantize",
    "quantize_model",
    "register_format",
    "resolve_plan",
]
