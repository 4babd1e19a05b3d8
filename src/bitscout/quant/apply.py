"""`quantize_model`: a copy of a model with each layer quantized as a plan says.

The plan's names (`QuantPlan`, `parse_plan`, `resolve_plan`, ...) live in
`bitscout.quant.plan` and the layer table parser in `bitscout.quant.tables`; they are
re-exported here for the modules that import them from this one.
"""

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from bitscout.quant.layers import quantizable_layers, to_quant
from bitscout.quant.norms import fix_norms
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
    "copy_model",
    "fx_name",
    "layer_types",
    "parse_layer_config",
    "parse_plan",
    "quantizable_layers",
    "quantize_model",
    "resolve_plan",
]


def copy_model(model: nn.Module) -> nn.Module:
    """`copy.deepcopy(model)`, also for a pruned model: prune's `weight` is a tensor computed
    from `weight_orig`, which deepcopy refuses; the copy gets a detached clone, and its own
    pre-hook recomputes it from its own `weight_orig` at the next forward."""
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def quantize_model(model: nn.Module, plan: QuantPlan | Mapping[str, Any]) -> nn.Module:
    """A new model with each layer quantized as `plan` says; `model` itself is never modified.

    Args:
        model: any float `torch.nn.Module` (a pruned one too: its effective weights are used).
        plan: a QuantPlan or a raw MASE `[passes.quantize]` table (`by`, `default` and
            per-layer `config` tables, keyed by layer name or type).

    Returns:
        A copy of `model` whose governed layers are quantized wrappers, and whose
        BatchNorm1d/2d layers compute in eval mode as the exported fixed-point hardware does
        (`bitscout.quant.norms`), whatever the plan.

    Raises:
        ConfigError: a bad table, or a key that names no layer of `model`.
    """
    resolved = resolve_plan(model, plan)
    new = copy_model(model)
    for path, quant in resolved.items():
        if quant is None:
            continue
        parent_path, _, child = path.rpartition(".")
        parent = new.get_submodule(parent_path)
        setattr(parent, child, to_quant(parent.get_submodule(child), quant))
    return fix_norms(new)
