"""bitscout: search how to quantize a trained neural network.

The public API is imported when first used, so `bitscout --help` does not load PyTorch.
Type checkers and IDEs read the `TYPE_CHECKING` imports below instead, so they see each
name's signature and docstring; `_PUBLIC` and those imports list the same names
(tests/test_typing.py checks it).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bitscout.analysis.compare import compare as compare
    from bitscout.analysis.sensitivity import sensitivity as sensitivity
    from bitscout.api import Candidate as Candidate
    from bitscout.api import FinetuneResult as FinetuneResult
    from bitscout.api import SearchResult as SearchResult
    from bitscout.api import finetune as finetune
    from bitscout.api import register_metric as register_metric
    from bitscout.api import search as search
    from bitscout.errors import ConfigError as ConfigError
    from bitscout.errors import SearchFailed as SearchFailed
    from bitscout.export import ExportResult as ExportResult
    from bitscout.export import export as export
    from bitscout.quant import Integer as Integer
    from bitscout.quant import LayerQuant as LayerQuant
    from bitscout.quant import QuantPlan as QuantPlan
    from bitscout.quant import quantize as quantize
    from bitscout.quant import quantize_model as quantize_model
    from bitscout.results.compare_out import CompareResult as CompareResult
    from bitscout.results.sensitivity import SensitivityResult as SensitivityResult
    from bitscout.zoo.data import register_dataset as register_dataset
    from bitscout.zoo.models import register_model as register_model
    from bitscout.zoo.train import TrainOptions as TrainOptions
    from bitscout.zoo.train import train as train

__version__ = "0.1.0"
_PUBLIC = {
    "search": "bitscout.api",
    "SearchResult": "bitscout.api",
    "Candidate": "bitscout.api",
    "finetune": "bitscout.api",
    "FinetuneResult": "bitscout.api",
    "sensitivity": "bitscout.analysis.sensitivity",
    "SensitivityResult": "bitscout.results.sensitivity",
    "register_metric": "bitscout.api",
    "register_model": "bitscout.zoo.models",
    "register_dataset": "bitscout.zoo.data",
    "train": "bitscout.zoo.train",
    "TrainOptions": "bitscout.zoo.train",
    "ConfigError": "bitscout.errors",
    "SearchFailed": "bitscout.errors",
    "compare": "bitscout.analysis.compare",
    "CompareResult": "bitscout.results.compare_out",
    "export": "bitscout.export",  # the package, callable: bitscout/export/__init__.py
    "ExportResult": "bitscout.export",
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
