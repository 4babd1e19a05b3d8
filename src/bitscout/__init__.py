"""bitscout: search how to quantize a trained neural network.

The public API is imported when first used, so `bitscout --help` does not load PyTorch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"
_PUBLIC = {
    "search": "bitscout.api",
    "SearchResult": "bitscout.api",
    "Candidate": "bitscout.api",
    "sensitivity": "bitscout.analysis.sensitivity",
    "SensitivityResult": "bitscout.results.sensitivity",
    "register_metric": "bitscout.api",
    "register_model": "bitscout.zoo.models",
    "register_dataset": "bitscout.zoo.data",
    "train": "bitscout.zoo.train",
    "TrainOptions": "bitscout.zoo.train",
    "ConfigError": "bitscout.errors",
    "SearchFailed": "bitscout.errors",
    "Integer": "bitscout.quant",
    "LayerQuant": "bitscout.quant",
    "QuantPlan": "bitscout.quant",
    "quantize": "bitscout.quant",
    "quantize_model": "bitscout.quant",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'bitscout' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
