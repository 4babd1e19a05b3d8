"""Evaluate models on held tensors: one model (`evaluate_model`) or a search's candidates."""

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bitscout.metrics import MetricContext, compute_metrics, get_metric, profile_model
from bitscout.quant.apply import quantize_model
from bitscout.quant.layers import LayerQuant
from bitscout.space import Choice, SearchSpace

CHUNK = 65536  # rows per forward pass: bounds memory on large splits


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of `model` on (x, y), computed afresh."""
    model.eval()
    correct = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for start in range(0, len(y), CHUNK):
            logits = model(x[start : start + CHUNK])
            target = y[start : start + CHUNK]
            correct += int((logits.argmax(dim=1) == target).sum())
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
    return {"accuracy": correct / len(y), "loss": loss_sum / len(y)}


def candidate_key(resolved: Mapping[str, LayerQuant | None]) -> tuple:
    """A hashable identity of a candidate: its formats per layer path."""
    return tuple(sorted(resolved.items()))


class Evaluator:
    """Scores candidates of one search: holds the evaluation tensors, the pristine float model
    and a cache of results by candidate, so a config proposed again is not evaluated again.

    Every candidate is built from the pristine model by `quantize_model`, which never mutates
    it, and every metric is computed afresh: nothing carries over from one candidate to the
    next.
    """

    def __init__(
        self,
        model: nn.Module,
        space: SearchSpace,
        x: torch.Tensor,
        y: torch.Tensor,
        metrics: Sequence[str],
        *,
        latency: Mapping[str, float] | None = None,
    ) -> None:
        self.model = model.eval()
        self.space = space
        self.x, self.y = x, y
        self.metrics = [get_metric(m).name for m in metrics]
        self.latency = dict(latency or {})
        self.profile = profile_model(self.model, x[:1])
        self.cache: dict[tuple, dict[str, float]] = {}

    def key(self, config: Mapping[str, Choice]) -> tuple:
        return candidate_key(self.space.resolved(self.model, config))

    def evaluate(self, config: Mapping[str, Choice]) -> tuple[dict[str, float], bool]:
        """The metrics of candidate `config`, and whether they came from the cache."""
        key = self.key(config)
        if key in self.cache:
            return dict(self.cache[key]), True
        resolved = dict(key)
        candidate = quantize_model(self.model, self.space.plan(config))
        ctx = MetricContext(
            profile=self.profile,
            plan=resolved,
            model=candidate,
            inputs=self.x,
            targets=self.y,
            **self.latency,
        )  # type: ignore[arg-type]
        if any(get_metric(m).kind == "forward" for m in self.metrics):
            ctx.logits = predict(candidate, self.x)
        result = compute_metrics(self.metrics, ctx)
        self.cache[key] = result
        return dict(result), False


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of `model` on `x`, in chunks to bound memory."""
    with torch.inference_mode():
        return torch.cat([model(x[s : s + CHUNK]) for s in range(0, len(x), CHUNK)])
