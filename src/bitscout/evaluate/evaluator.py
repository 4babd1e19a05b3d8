"""Evaluate models on held tensors: one model (`evaluate_model`) or a search's candidates."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bitscout.evaluate.engine.caches import MetricsCache
from bitscout.evaluate.engine.candidates import Key, Resolver
from bitscout.evaluate.engine.chain import trace_chain
from bitscout.evaluate.engine.runner import Runner
from bitscout.evaluate.metrics import (
    MetricContext,
    compute_metrics,
    forward_sums,
    get_metric,
    profile_model,
)  # fmt: skip
from bitscout.quant.apply import QuantPlan, quantize_model
from bitscout.quant.formats import Integer, float32_exact
from bitscout.quant.layers import LayerQuant
from bitscout.quant.space import Choice, SearchSpace

CHUNK = 65536  # rows per forward pass: bounds memory on large splits
BLOCK_BYTES = 2**20  # per tensor of a block of rows of candidates run together
Plan = dict[str, LayerQuant | None]


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


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the block: the fast path's blocks are cache-sized, where
    OpenMP's fork and join cost more than a second thread saves, and a busy core stalls every
    operation. Parallel searches run one process per core (n_jobs) instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of `model` on `x`, in chunks to bound memory."""
    with torch.inference_mode():
        return torch.cat([model(x[s : s + CHUNK]) for s in range(0, len(x), CHUNK)])


class Evaluator:
    """Scores candidates of one search and caches their metrics by candidate.

    The pristine float model is never modified. Forward metrics come from a fast path that
    reuses whatever candidates share (see `engine.runner`) and gives what the plain path
    gives, building the quantized model with `quantize_model` and running it: the same
    predicted class for every sample, the loss up to the rounding of grouped sums. Models
    that are not one chain of per-sample modules take the plain path.

    Latency times the candidate built by `quantize_model`, once per distinct computation (see
    `operations`) unless `share_latency` is False, so that it costs a few measurements per
    search instead of several forward passes per candidate.
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
        block_bytes: int = BLOCK_BYTES,
        share_latency: bool = True,
    ) -> None:
        self.model = model.eval()
        self.space = space
        self.x, self.y = x, y
        self.metrics = [get_metric(m).name for m in metrics]
        self.latency = dict(latency or {})
        self.share_latency = share_latency
        self._timings: dict[tuple, dict[str, float]] = {}
        self.profile = profile_model(self.model, x[:1])
        self.cache = MetricsCache(self.metrics)
        self._resolver = Resolver(space)
        kinds = {name: get_metric(name).kind for name in self.metrics}
        self._static = [m for m in self.metrics if kinds[m] == "static"]
        self._forward = [m for m in self.metrics if kinds[m] == "forward"]
        self._timed = [m for m in self.metrics if kinds[m] == "timing"]
        chain = trace_chain(self.model) if self._forward else None
        fixed = self._resolver.fixed
        self._runner = (
            None if chain is None else Runner(chain, x, fixed=fixed, block_bytes=block_bytes)
        )

    def key(self, config: Mapping[str, Choice]) -> Key:
        """A compact hashable identity of `config`: configs that quantize alike share it."""
        return self._resolver.key(config)

    def remember(self, config: Mapping[str, Choice], metrics: Mapping[str, float]) -> bool:
        """Cache metrics found elsewhere (a resumed study) unless `config` is cached already;
        False, caching nothing, when they lack one of this evaluator's metrics."""
        if not all(name in metrics for name in self.metrics):
            return False
        self.cache.setdefault(self.key(config), metrics)
        return True

    def evaluate(self, config: Mapping[str, Choice]) -> tuple[dict[str, float], bool]:
        """The metrics of candidate `config`, and whether they came from the cache."""
        return self.evaluate_many([config])[0]

    def evaluate_many(
        self, configs: Sequence[Mapping[str, Choice]]
    ) -> list[tuple[dict[str, float], bool]]:
        """`evaluate` of each config, in order, sharing work between them: fastest for runs of
        consecutive candidates of the space. A config repeated in `configs` is computed once
        and reported as cached after its first occurrence."""
        keys = [self.key(c) for c in configs]
        fresh = [k for k in dict.fromkeys(keys) if k not in self.cache]
        for key, metrics in zip(fresh, self._compute(fresh), strict=True):
            self.cache[key] = metrics
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        new = set(fresh)
        return [(self.cache[k], not (k in new and first[k] == i)) for i, k in enumerate(keys)]

    def _compute(self, keys: Sequence[Key]) -> list[dict[str, float]]:
        plans = [self._resolver.plan(k) for k in keys]
        rows = [compute_metrics(self._static, MetricContext(self.profile, p)) for p in plans]
        if self._forward and keys:
            with torch.inference_mode(), one_thread():
                self._add_forward(keys, plans, rows)
        for plan, row in zip(plans, rows, strict=True):
            if self._timed:
                row.update(self._time(plan))
        return [{m: row[m] for m in self.metrics} for row in rows]

    def _add_forward(self, keys: Sequence[Key], plans: Sequence[Plan], rows: list[dict]) -> None:
        runner = self._runner
        if runner is None:
            for plan, row in zip(plans, rows, strict=True):
                logits = predict(quantize_model(self.model, QuantPlan("name", plan)), self.x)
                row.update(self._forward_metrics([plan], [logits.unsqueeze(1)])[0])
            return
        candidates = [runner.candidate(k, p) for k, p in zip(keys, plans, strict=True)]
        for stage, members in runner.groups(candidates):
            blocks = runner.logits(stage, [candidates[i] for i in members])
            values = self._forward_metrics([plans[i] for i in members], blocks)
            for i, metrics in zip(members, values, strict=True):
                rows[i].update(metrics)

    def _forward_metrics(self, plans: Sequence[Plan], blocks: Iterable[torch.Tensor]) -> list[dict]:
        """Forward metrics of candidates `plans` from blocks of rows of their logits [rows,
        candidate, class]: summed block by block where the metric is batched, else computed
        on each candidate's whole logits."""
        unbatched = [m for m in self._forward if get_metric(m).batched is None]
        sums: dict[str, np.ndarray] = {}
        kept = []
        start = 0
        for block in blocks:
            targets = self.y[start : start + len(block)]
            for name, value in forward_sums(self._forward, block, targets).items():
                sums[name] = sums[name] + value if name in sums else value
            start += len(block)
            kept += [block] if unbatched else []
        result = [
            {m: float(total[i]) / start for m, total in sums.items()} for i in range(len(plans))
        ]
        for i, plan in enumerate(plans if unbatched else ()):
            logits = torch.cat([block[:, i] for block in kept])
            ctx = MetricContext(self.profile, plan, logits=logits, targets=self.y)
            result[i].update(compute_metrics(unbatched, ctx))
        return result

    def _time(self, plan: Plan) -> dict[str, float]:
        signature = operations(plan) if self.share_latency else tuple(plan.items())
        if signature not in self._timings:
            candidate = quantize_model(self.model, QuantPlan("name", plan))
            ctx = MetricContext(self.profile, plan, model=candidate, inputs=self.x, **self.latency)  # type: ignore[arg-type]
            self._timings[signature] = compute_metrics(self._timed, ctx)
        return self._timings[signature]


def operations(plan: Plan) -> tuple:
    """What the simulated forward of a candidate computes, up to the values: per layer and
    tensor, whether it is quantized, with which rounding and overflow, in float32 or float64.
    Fake quantization runs the same operations whatever the width, so candidates that agree
    here take the same time, and timing each again would only add noise."""

    def ops(fmt: Integer | None) -> tuple | None:
        return None if fmt is None else (fmt.rounding, fmt.overflow, float32_exact(fmt))

    return tuple(
        (path, None if q is None else (ops(q.data_in), ops(q.weight), ops(q.bias)))
        for path, q in plan.items()
    )
