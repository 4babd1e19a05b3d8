"""Number formats, quantized layers and `quantize_model`."""

from bitscout.quant.apply import quantize_model
from bitscout.quant.binary import Binary, Ternary
from bitscout.quant.blocks import MXFP, BlockFP, MXInt
from bitscout.quant.catalog import FORMATS
from bitscout.quant.floats import Log, MinifloatDenorm, MinifloatIEEE
from bitscout.quant.formats import Field, Integer, NumberFormat, quantize, register_format
from bitscout.quant.layers import (
    LayerQuant,
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    register_layer_type,
)
from bitscout.quant.plan import QuantPlan, governing_key, parse_plan, resolve_plan

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
    "governing_key",
    "parse_plan",
    "quantize",
    "quantize_model",
    "register_format",
    "register_layer_type",
    "resolve_plan",
]
