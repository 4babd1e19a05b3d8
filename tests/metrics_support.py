"""What the metric tests (tests/test_metrics*.py) share: a `MetricContext` for a zoo model with
its profile and a plan, and one metric's value computed through `compute_metrics`."""

from __future__ import annotations

import torch

from bitscout.evaluate.metrics import MetricContext, compute_metrics
from bitscout.evaluate.profile import profile_model
from bitscout.quant.layers import LayerQuant
from bitscout.zoo.models import build_model


def _ctx(name: str, plan: dict[str, LayerQuant | None] | None = None, **kw) -> MetricContext:
    model = build_model(name)
    profile = profile_model(model, torch.zeros(1, 16))
    if plan is None:
        plan = {layer.path: None for layer in profile.layers}
    return MetricContext(profile=profile, plan=plan, **kw)


def _value(name: str, ctx: MetricContext) -> float:
    return compute_metrics([name], ctx)[name]
