"""bitscout: search how to quantize a trained neural network."""

from bitscout.errors import ConfigError
from bitscout.quant import Integer, LayerQuant, QuantPlan, quantize, quantize_model

__all__ = ["ConfigError", "Integer", "LayerQuant", "QuantPlan", "quantize", "quantize_model"]
__version__ = "0.1.0"
