"""`quantize_model`: a copy of a model with each layer quantized as a plan says.

The plan's names (`QuantPlan`, `parse_plan`, `resolve_plan`, ...) live in
`bitscout.quant.plan` and the layer table parser in `bitscout.quant.tables`; they are
re-exported here for the modules that import them from this one.
"""

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from bitscout.quant.layers import quantizable_layers, to_quant
from bitscout.quant.plan import (
    Layers,
    QuantPlan,
    fx_name,
    layer_types,
    parse_plan,
    resolve_plan,
)
from bitscout.quant.tables import parse_layer_config

__all__ = [
    "Layers",
    "QuantPlan",
    "fx_name",
    "layer_types",
    "parse_layer_config",
    "parse_plan",
    "quantizable_layers",
    "quantize_model",
    "resolve_plan",
]


def quantize_model(model: nn.Module, plan: QuantPlan | Mapping[str, Any]) -> nn.Module:
    """A new model with each layer quantized as `plan` says; `model` itself is never modified.

    `plan` is a QuantPlan or a raw MASE `[passes.quantize]` table.
    """
    resolved = resolve_plan(model, plan)
    new = copy.deepcopy(model)
    for path, quant in resolved.items():
        if quant is None:
            continue
        parent_path, _, child = path.rpartition(".")
        parent = new.get_submodule(parent_path)
        setattr(parent, child, to_quant(parent.get_submodule(child), quant))
    return new
