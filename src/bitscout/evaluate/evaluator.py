"""Evaluate a search's candidates on validation data (one model: `forward.evaluate_model`)."""

from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from bitscout.data.containers import EvalData, check_fits, prepare
from bitscout.errors import ConfigError
from bitscout.evaluate.audit import Audit, disagreement, extremes
from bitscout.evaluate.checks import check_available, check_labels, check_layers, output_shape
from bitscout.evaluate.engine.caches import MetricsCache
from bitscout.evaluate.engine.candidates import Key, Resolver
from bitscout.evaluate.engine.chain import chain_of
from bitscout.evaluate.engine.runner import Runner
from bitscout.evaluate.forward import evaluate_model, floating_dtype, on_device, one_thread, predict
from bitscout.evaluate.metrics import (
    COUNTED,
    Kind,
    LossFn,
    Metric,
    MetricContext,
    compute_metrics,
)
from bitscout.evaluate.metrics import get_metric as lookup
from bitscout.evaluate.overflow import Probe, Tally
from bitscout.evaluate.profile import profile_model
from bitscout.evaluate.qat import Trainer
from bitscout.evaluate.reduce import Blocks, Reduction, forward_metrics, with_targets
from bitscout.evaluate.signature import operations
from bitscout.evaluate.unfused import unfused
from bitscout.quant.apply import QuantPlan, quantize_model
from bitscout.quant.layers import LayerQuant
from bitscout.quant.space import Choice, SearchSpace

__all__ = ["Evaluator", "LossFn", "evaluate_model", "one_thread", "operations", "predict"]

BLOCK_BYTES = 2**20  # per tensor of a block of rows of candidates run together
Plan = dict[str, LayerQuant | None]
Rung = Callable[[int, dict[str, float]], bool]  # epochs trained, metrics -> train on


class Evaluator:
    """Scores candidates of one search and caches their metrics by candidate.

    The pristine float model is never modified. Forward metrics come from a fast path that
    reuses whatever candidates share (see `engine.runner`) and gives what the plain path
    gives, building the quantized model with `quantize_model` and running it: the same
    predicted class for every sample, the loss up to the rounding of grouped sums. Models
    that are not proven one chain of per-sample modules (`engine.chain`), and data read batch
    by batch, take the plain path. The fast path is checked against the plain path on the
    space's extreme candidates first (the plain path for all when they differ, said in
    `notes`), then on a sample of the candidates it scores (`audit`: a difference raises
    SearchFailed). Every forward runs with PyTorch's fused paths off (`unfused`), and every
    layer the space quantizes must be called by the model's forward.

    Latency times the candidate built by `quantize_model`, once per distinct computation (see
    `operations`) unless `share_latency` is False, so that it costs a few measurements per
    search instead of several forward passes per candidate.
    """

    def __init__(
        self,
        model: nn.Module,
        space: SearchSpace,
        data: EvalData | tuple,
        metrics: Sequence[str],
        *,
        extra: Mapping[str, Metric] | None = None,
        loss_fn: LossFn | None = None,
        latency: Mapping[str, Any] | None = None,
        block_bytes: int = BLOCK_BYTES,
        share_latency: bool = True,
        device: torch.device | str | None = None,
        audit: Audit | None = None,
        trainer: Trainer | None = None,
    ) -> None:
        """`audit`: which candidates of the fast path to re-derive (default: Audit());
        `trainer`: train every candidate before scoring it (quantization-aware training)."""
        self.trainer = trainer
        if not isinstance(data, EvalData):
            data = prepare(data, dtype=floating_dtype(model), device=device or "cpu")
        self.data = data
        self.model = on_device(model, data.device).eval()
        self.space = space
        self.extra = dict(extra or {})
        self.loss_fn = loss_fn
        self.metrics = [self.get(m).name for m in metrics]
        self.latency = dict(latency or {})
        self.share_latency = share_latency
        self._timings: dict[tuple, dict[str, float]] = {}
        self.audit = audit if audit is not None else Audit()
        self.notes: list[str] = []  # lines for the user: float parameters, the fast path off
        sample = data.sample()
        check_fits(self.model, sample)
        with unfused():
            self.profile = profile_model(self.model, sample)
            self.out_shape = output_shape(self.model, sample)
        self.cache = MetricsCache(self.metrics)
        self._resolver = Resolver(space)
        kinds = {name: self.get(name).kind for name in self.metrics}
        self._by_kind = {k: [m for m in self.metrics if kinds[m] == k] for k in set(kinds.values())}
        check_available(self.metrics, loss_fn, bool(self._kind("timing")), data, self.out_shape)
        first = self._resolver.plan(self.key(space.config(0)))
        if (note := check_layers(self.model, first, self._resolver.fixed, sample)) is not None:
            self.notes.append(note)
        # before the fast path's cross-check: a model editing its input would skew it
        self._float = self.evaluate_plan(dict.fromkeys(self._resolver.paths), check=True)
        self._runner = self._fast_runner(block_bytes)
        self.audit.engine = "fast" if self._runner is not None else "plain"

    @property
    def x(self) -> torch.Tensor | None:
        return self.data.x

    @property
    def y(self) -> torch.Tensor | None:
        return self.data.y

    @property
    def rows(self) -> int:
        return self.data.rows

    def get(self, name: str) -> Metric:
        metric = lookup(name, extra=self.extra)
        if name == "loss" and self.loss_fn is not None:  # the user's loss: its unit, not nats
            return replace(metric, unit="")
        return metric

    def _kind(self, kind: Kind) -> list[str]:
        return self._by_kind.get(kind, [])

    def check_labels(self, data: EvalData, key: str = "data") -> None:
        """Class-index targets of `data` within the model's outputs (`checks.check_labels`)."""
        check_labels(self.metrics, self.loss_fn, data, self.out_shape, key)

    def _fast_runner(self, block_bytes: int) -> Runner | None:
        """The fast path, when the model is proven a chain and it scores the space's extreme
        candidates as the plain path does; else None, said in `notes`."""
        if not self._kind("forward") or self.data.x is None or self.data.y is None:
            return None
        chain, why = chain_of(self.model)
        runner = None
        if chain is not None:
            runner = Runner(chain, self.data.x, fixed=self._resolver.fixed,
                            block_bytes=block_bytes, count=bool(self._counted),
                            y=self.data.y)  # fmt: skip
            why = self._cross_check(runner)
        if why:
            self.notes.append(f"fast engine off, every candidate runs the plain path: {why}")
            return None
        return runner

    def _cross_check(self, runner: Runner) -> str:
        """How `runner` scores an extreme candidate otherwise than the plain path, or ""."""
        configs = extremes(self.space)
        keys = [self.key(c) for c in configs]
        plans = [self._resolver.plan(k) for k in keys]
        rows: list[dict] = [{} for _ in keys]
        with torch.inference_mode(), one_thread(), unfused():
            self._fast_forward(runner, keys, plans, rows)
            for config, plan, fast in zip(configs, plans, rows, strict=True):
                found = disagreement(fast, self._plain_forward(plan))
                if found is not None:
                    return f"on the space's extreme candidate {dict(config)} it gave {found}"
        return ""

    def key(self, config: Mapping[str, Choice]) -> Key:
        """A compact hashable identity of `config`: configs that quantize alike share it."""
        return self._resolver.key(config)

    def plan(self, config: Mapping[str, Choice]) -> Plan:
        """The formats per layer path of candidate `config`."""
        return self._resolver.plan(self.key(config))

    def remember(self, config: Mapping[str, Choice], metrics: Mapping[str, float]) -> bool:
        """Cache metrics found elsewhere (a resumed study) unless `config` is cached already;
        False, caching nothing, when they lack one of this evaluator's metrics."""
        if not all(name in metrics for name in self.metrics):
            return False
        key = self.key(config)
        if key not in self.cache:
            self.cache[key] = metrics
        return True

    def evaluate(self, config: Mapping[str, Choice]) -> tuple[dict[str, float], bool]:
        """The metrics of candidate `config`, and whether they came from the cache."""
        return self.evaluate_many([config])[0]

    def evaluate_many(
        self, configs: Sequence[Mapping[str, Choice]], *, cache: bool = True
    ) -> list[tuple[dict[str, float], bool]]:
        """`evaluate` of each config, in order, sharing work between them: fastest for runs of
        consecutive candidates of the space. A config repeated in `configs` is computed once
        and reported as cached after its first occurrence. `cache=False` keeps nothing: a
        brute force never asks twice, and a million cached candidates would fill memory."""
        keys = [self.key(c) for c in configs]
        store: MutableMapping[Hashable, dict[str, float]] = self.cache if cache else {}
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        fresh = [k for k in dict.fromkeys(keys) if k not in store]
        labels = [str(dict(configs[first[k]])) for k in fresh]
        for key, metrics in zip(fresh, self._compute(fresh, labels), strict=True):
            store[key] = metrics
        new = set(fresh)
        return [(store[k], not (k in new and first[k] == i)) for i, k in enumerate(keys)]

    def _compute(self, keys: Sequence[Key], labels: Sequence[str]) -> list[dict[str, float]]:
        """The metrics of candidates `keys` (trained first, with a trainer); `labels` name
        them in an audit's message."""
        if self.trainer is not None:
            return [self.train_and_score(self._resolver.plan(k))[0] for k in keys]
        return self._ptq(keys, labels)

    def ptq_many(self, configs: Sequence[Mapping[str, Choice]]) -> list[dict[str, float]]:
        """The post-training metrics of `configs`, uncached, by the fast path where it runs:
        what a candidate scores before any training (a fidelity ladder's first rung)."""
        keys = [self.key(c) for c in configs]
        return self._ptq(keys, [str(dict(c)) for c in configs])

    def train_and_score(
        self, plan: Plan, on_rung: Rung | None = None, rungs: Sequence[int] = ()
    ) -> tuple[dict[str, float], int]:
        """The metrics of candidate `plan` after quantization-aware training from the float
        weights, and the epochs it trained. At each epoch of `rungs` (before the last),
        `on_rung(epoch, metrics)` says whether to train on; metrics are the plain path's."""
        assert self.trainer is not None
        candidate = quantize_model(self.model, QuantPlan("name", plan))
        stopped: list[dict[str, float]] = []  # the metrics it stopped at: not scored twice

        def at_epoch(epoch: int) -> bool:
            if on_rung is None or epoch not in rungs:
                return True
            metrics = self._scored(plan, candidate)
            if on_rung(epoch, metrics):
                return True
            stopped.append(metrics)
            return False

        epochs = self.trainer.fit(candidate, plan, at_epoch)
        return (stopped[0] if stopped else self._scored(plan, candidate)), epochs

    def _scored(self, plan: Plan, candidate: nn.Module) -> dict[str, float]:
        """Every metric of `candidate`, a trained model of `plan`, by the plain path."""
        training = candidate.training
        candidate.eval()
        row = self._static(plan)
        with unfused():
            if self._kind("forward"):
                with torch.inference_mode(), one_thread():
                    row.update(self._plain_forward(plan, candidate))
            if self._kind("timing"):
                row.update(self._time(plan))
            if self._kind("model"):
                row.update(self._by_model(plan, model=candidate))
        candidate.train(training)
        return {m: row[m] for m in self.metrics}

    def _ptq(self, keys: Sequence[Key], labels: Sequence[str]) -> list[dict[str, float]]:
        plans = [self._resolver.plan(k) for k in keys]
        rows = [self._static(p) for p in plans]
        with unfused():
            if self._kind("forward") and keys:
                with torch.inference_mode(), one_thread():
                    self._add_forward(keys, plans, rows, labels)
            for plan, row in zip(plans, rows, strict=True):
                if self._kind("timing"):
                    row.update(self._time(plan))
                if self._kind("model"):
                    row.update(self._by_model(plan))
        return [{m: row[m] for m in self.metrics} for row in rows]

    def _static(self, plan: Plan) -> dict[str, float]:
        return compute_metrics(self._kind("static"), MetricContext(self.profile, plan), self.extra)

    def _by_model(
        self, plan: Plan, check: bool = False, model: nn.Module | None = None
    ) -> dict[str, float]:
        """The user's metrics, each given the candidate's quantized model (`model`, else
        built) and a private copy of the data; `check`: that each metric left its copy as it
        was."""
        candidate = model or quantize_model(self.model, QuantPlan("name", plan)).eval()
        ctx = MetricContext(self.profile, plan, model=candidate, data=self.data.for_metrics())
        row: dict[str, float] = {}
        for name in self._kind("model"):
            row.update(compute_metrics([name], ctx, self.extra))
            if check:
                self.check_intact(f"metrics.{name}", "on the float model")
        return row

    def baseline(self) -> dict[str, float]:
        """The float model's metrics on the same rows (every layer left float), by the plain
        path, computed once when the evaluator is made; latency is left out (it times fake
        quantization, which float does not run)."""
        return dict(self._float)

    def check_intact(self, who: str | None = None, when: str = "during the search") -> None:
        """Refuse, naming `who` (by default whoever could have), a model or user metric that
        edited the validation data in place: every later candidate would see other rows."""
        changed = self.data.changed()
        if not changed:
            return
        users = [f"metrics.{m}" for m in self._kind("model")]
        blamed = ["model"] if "rows" in changed else []
        blamed += users if "metric data" in changed or not self.data.held else []
        rule = (f"edits the validation data it is given in place (its SHA-256 changed {when}): "
                "every later candidate would be scored on other rows; compute on a copy "
                "(x = x + 1, not x.add_(1))")  # fmt: skip
        raise ConfigError(who or " or ".join(blamed), rule)

    def evaluate_plan(self, plan: Plan, *, check: bool = False) -> dict[str, float]:
        """The metrics of any plan (formats per layer path), a candidate of the space or not
        (`bitscout.sensitivity`'s probes), by the plain path and uncached; latency is left
        out, as for `baseline`. `check`: refuse a model or user metric that edits the data."""
        row = self._static(plan)
        with unfused():
            if self._kind("forward"):
                with torch.inference_mode(), one_thread():
                    row.update(self._plain_forward(plan))
            if check:
                self.check_intact("model", "before the search")
            if self._kind("model"):
                row.update(self._by_model(plan, check))
        return {m: row[m] for m in self.metrics if m in row}

    def _plain_forward(self, plan: Plan, model: nn.Module | None = None) -> dict[str, float]:
        candidate = model or quantize_model(self.model, QuantPlan("name", plan))
        blocks = ((predict(candidate, x).unsqueeze(1), y) for x, y in self.data.batches())
        if not self._counted:
            return self._forward_metrics(1, blocks)[0]
        with Probe().attached(candidate) as probe:
            row = self._forward_metrics(1, blocks)[0]
        return row | self._counted_metrics(probe.tally)

    def _add_forward(
        self, keys: Sequence[Key], plans: Sequence[Plan], rows: list[dict], labels: Sequence[str]
    ) -> None:
        """The forward metrics of candidates `keys` into `rows`: by the fast path, a sample
        of them again by the plain path (`audit`), or all by the plain path."""
        if self._runner is None:
            for plan, row in zip(plans, rows, strict=True):
                row.update(self._plain_forward(plan))
            return
        self._fast_forward(self._runner, keys, plans, rows)
        names = self._kind("forward")
        for i in self.audit.pick(len(keys)):
            fast = {m: rows[i][m] for m in names}
            self.audit.check(labels[i], fast, self._plain_forward(plans[i]))

    def _fast_forward(
        self, runner: Runner, keys: Sequence[Key], plans: Sequence[Plan], rows: list[dict]
    ) -> None:
        y = runner.y  # the runner's rows are sorted by target
        assert y is not None  # a runner is made for held data only
        candidates = [runner.candidate(k, p) for k, p in zip(keys, plans, strict=True)]
        for stage, members in runner.groups(candidates):
            logits = runner.logits(stage, [candidates[i] for i in members])
            values = self._forward_metrics(len(members), with_targets(logits, y))
            for j, (i, metrics) in enumerate(zip(members, values, strict=True)):
                rows[i].update(metrics)
                rows[i].update(self._counted_metrics(runner.tallies[j]) if self._counted else {})

    def _forward_metrics(self, g: int, blocks: Blocks) -> list[dict]:
        """Forward metrics of g candidates from blocks of their logits (`reduce`)."""
        names = self._kind("forward")
        loss_fn = self.loss_fn if "loss" in names else None
        batched = [m for m in names if self.get(m).batched is not None]
        how = Reduction(names, batched, loss_fn, self.out_shape, self.profile, self.extra)
        return forward_metrics(how, g, blocks)

    @property
    def _counted(self) -> list[str]:
        """The forward metrics counted inside the datapath (`metrics.COUNTED`)."""
        return [m for m in self._kind("forward") if m in COUNTED]

    def _counted_metrics(self, tally: Tally) -> dict[str, float]:
        ctx = MetricContext(self.profile, {}, overflow=tally)
        return compute_metrics(self._counted, ctx, self.extra)

    def _time(self, plan: Plan) -> dict[str, float]:
        signature = operations(plan) if self.share_latency else tuple(plan.items())
        if signature not in self._timings:
            candidate = quantize_model(self.model, QuantPlan("name", plan))
            ctx = MetricContext(self.profile, plan, model=candidate, inputs=self.x, **self.latency)
            self._timings[signature] = compute_metrics(self._kind("timing"), ctx, self.extra)
        return self._timings[signature]
