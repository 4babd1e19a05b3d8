"""The fast path's parts one by one, each against the plain path or a rule written here: the
runner's rows sorted by target and its stacked candidates, the resolver's keys, the metrics
cache, models that are no chain, metrics without a batched form, latency timed once per
computation, and the bounded boundary and activation caches. Split from
tests/test_fastpath.py (whose models it uses, from tests/fastpath_support.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from fastpath_support import (
    CASES,
    METRIC_NAMES,
    _jsc_data,
    _layer,
    _one_thread,  # noqa: F401 - the autouse fixture
    assert_same,
    jsc_s,
    jsc_tiny,
    plain_logits,
    plain_metrics,
    random_indexes,
)
from torch import nn

from bitscout.evaluate.engine.caches import BoundaryCache, MetricsCache
from bitscout.evaluate.engine.candidates import Resolver
from bitscout.evaluate.engine.chain import trace_chain
from bitscout.evaluate.engine.runner import Runner
from bitscout.evaluate.evaluator import Evaluator, operations
from bitscout.evaluate.metrics import METRICS, Metric, MetricContext, compute_metrics
from bitscout.quant import Integer, LayerQuant
from bitscout.quant.space import SearchSpace
from bitscout.zoo.models import build_model


def test_runner_sorts_its_rows_by_target():
    model, space, x, y = jsc_tiny()
    resolver = Resolver(space)
    runner = Runner(trace_chain(model), x, fixed=resolver.fixed, block_bytes=2**18, y=y)
    order = sorted(range(len(y)), key=lambda i: (int(y[i]), i))  # a stable sort, by hand
    assert runner.y.tolist() == [int(y[i]) for i in order]
    config = space.config(space.size - 1)
    candidate = runner.candidate(resolver.key(config), resolver.plan(resolver.key(config)))
    with torch.inference_mode():
        logits = torch.cat(list(runner.logits(len(runner.stages) - 1, [candidate])))[:, 0]
    want = plain_logits(model, space, config, x)[order]
    assert torch.equal(logits.argmax(dim=1), want.argmax(dim=1))
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    # Targets that are no class indexes (floats, several per row) leave the rows in order.
    unsorted = Runner(trace_chain(model), x, fixed=resolver.fixed, block_bytes=2**18)
    assert torch.equal(runner.head, unsorted.head[order])
    for other in (y.double(), torch.nn.functional.one_hot(y)):
        kept = Runner(trace_chain(model), x, fixed=resolver.fixed, block_bytes=2**18, y=other)
        assert kept.y is other and torch.equal(kept.head, unsorted.head)


def test_consecutive_candidates_are_stacked():
    model, space, x, _ = jsc_tiny()
    resolver = Resolver(space)
    runner = Runner(trace_chain(model), x, fixed=resolver.fixed, block_bytes=2**20)
    keys = [resolver.key(space.config(i)) for i in range(space.size)]
    groups = runner.groups([runner.candidate(k, resolver.plan(k)) for k in keys])
    # One group per data_in width over the 4 x 4 weight and bias widths, split where some of
    # them sum exactly only in float64 (16-bit weights on 8-bit inputs, 8- and 16-bit on 16-bit
    # ones): those run apart rather than pull the whole group into float64.
    spans = [(0, 16), (16, 28), (28, 32), (32, 40), (40, 48)]
    assert [members for _, members in groups] == [list(range(a, b)) for a, b in spans]
    wide = [runner.candidate(k, resolver.plan(k)).formats[0].weight.width for k in keys]
    assert [wide[i] for i in range(28, 32)] == [16] * 4
    assert {wide[i] for i in range(40, 48)} == {8, 16}


def test_resolver_agrees_with_the_space():
    for build in (*CASES.values(),):
        model, space, _, _ = build()
        resolver = Resolver(space)
        for i in random_indexes(space, 5):
            config = space.config(i)
            assert resolver.plan(resolver.key(config)) == space.resolved(config)
    model = build_model("jsc-toy")
    tables = {"default": {"name": ["NA"]}, "linear": _layer([4, 8], [2, 4], [8])}
    space = SearchSpace(model, "type", tables)
    resolver = Resolver(space)
    for i in range(space.size):
        assert resolver.plan(resolver.key(space.config(i))) == space.resolved(space.config(i))


def test_configs_that_quantize_alike_share_a_key():
    model, space, x, y = jsc_s()
    evaluator = Evaluator(model, space, (x, y), METRIC_NAMES)
    base = space.config(0)
    unquantized = {**base, "seq_blocks_2/name": "NA", "seq_blocks_2/data_in_width": 4}
    other = {**unquantized, "seq_blocks_2/data_in_width": 8}
    assert evaluator.key(unquantized) == evaluator.key(other) != evaluator.key(base)


def test_cache_hits_and_copies():
    model, space, x, y = jsc_tiny()
    evaluator = Evaluator(model, space, (x, y), METRIC_NAMES)
    a, b = space.config(5), space.config(40)
    first, cached = evaluator.evaluate(a)
    assert not cached
    again, cached = evaluator.evaluate(a)
    assert cached and again == first
    again["accuracy"] = -1.0  # a caller's changes do not reach the cache
    assert evaluator.evaluate(a)[0] == first
    results = evaluator.evaluate_many([b, a, b])
    assert [cached for _, cached in results] == [False, True, True]
    assert results[0][0] == results[2][0] == evaluator.evaluate(b)[0]
    assert len(evaluator.cache) == 2
    evaluator.cache.clear()
    assert evaluator.evaluate(a) == (first, False)


def test_remember_fills_the_cache_from_elsewhere():
    model, space, x, y = jsc_tiny()
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "flops"])
    config = space.config(3)
    assert not evaluator.remember(config, {"accuracy": 0.5})  # incomplete: not cached
    assert evaluator.evaluate(config)[1] is False
    evaluator.cache.clear()
    stored = {"accuracy": 0.25, "flops": 7.0, "loss": 1.0}
    assert evaluator.remember(config, stored)
    assert evaluator.evaluate(config) == ({"accuracy": 0.25, "flops": 7.0}, True)
    evaluator.cache.setdefault(evaluator.key(config), {"accuracy": 1.0, "flops": 1.0})
    assert evaluator.evaluate(config)[0]["accuracy"] == 0.25  # the first entry stays


class Residual(nn.Module):
    """Not a chain: the fast path must hand it to the plain path."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 5)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + x)


def test_models_that_are_not_chains_take_the_plain_path():
    torch.manual_seed(4)
    model = Residual().eval()
    assert trace_chain(model) is None
    assert trace_chain(nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=1))) is None
    assert trace_chain(nn.Sequential(nn.Flatten(0), nn.Linear(4, 4))) is None
    space = SearchSpace(model, "name", {"default": _layer([4, 8], [2, 8], [8])})
    x, y = _jsc_data()
    evaluator = Evaluator(model, space, (x, y), METRIC_NAMES)
    results = evaluator.evaluate_many([space.config(i) for i in range(space.size)])
    for i, (got, _) in enumerate(results):
        assert_same(got, plain_metrics(model, space, space.config(i), x, y))


def test_forward_metric_without_batched_form(monkeypatch):
    def top2(ctx: MetricContext) -> float:
        """Fraction of rows whose target is among the two largest logits."""
        best = ctx.logits.topk(2, dim=1).indices
        return (best == ctx.targets[:, None]).any(dim=1).float().mean().item()

    monkeypatch.setitem(
        METRICS._items, "top2", Metric("top2", "fraction", "maximize", "forward", top2)
    )
    model, space, x, y = jsc_s()
    names = ["top2", "accuracy"]
    evaluator = Evaluator(model, space, (x, y), names, block_bytes=2**14)
    configs = [space.config(i) for i in range(8)]
    for config, (got, _) in zip(configs, evaluator.evaluate_many(configs), strict=True):
        logits = plain_logits(model, space, config, x)
        ctx = MetricContext(evaluator.profile, space.resolved(config), logits=logits, targets=y)
        assert got == compute_metrics(names, ctx)


def test_latency_times_the_built_candidate():
    model, space, x, y = jsc_tiny()
    latency = {"latency_repeats": 2, "latency_warmup": 0, "latency_budget_s": 0.0}
    threads = torch.get_num_threads()
    evaluator = Evaluator(model, space, (x, y), ["latency", "accuracy"], latency=latency)
    (got, _), (other, _) = evaluator.evaluate_many([space.config(0), space.config(1)])
    assert got["latency"] > 0 and other["latency"] > 0
    assert got["accuracy"] == plain_metrics(model, space, space.config(0), x, y)["accuracy"]
    assert torch.get_num_threads() == threads


def test_operations_tell_computations_apart():
    q = {"data_in": Integer(8), "weight": Integer(4), "bias": Integer(8)}
    base = {"a": LayerQuant(**q), "b": None}
    assert operations(base) == operations(
        {"a": LayerQuant(Integer(4), Integer(2), Integer(16)), "b": None}
    )
    changed = [
        {"a": LayerQuant(**{**q, "bias": None}), "b": None},  # a float bias: no quantize op
        {"a": LayerQuant(**q), "b": LayerQuant()},  # b's wrapper runs, quantizing nothing
        {"a": LayerQuant(**{**q, "weight": Integer(4, rounding="floor")}), "b": None},
        {"a": LayerQuant(**{**q, "weight": Integer(4, overflow="wrap")}), "b": None},
        {"a": LayerQuant(**{**q, "data_in": Integer(28)}), "b": None},  # float64 arithmetic
    ]
    signatures = {operations(p) for p in changed}
    assert operations(base) not in signatures and len(signatures) == len(changed)


def test_latency_is_timed_once_per_computation(monkeypatch):
    timed = []

    def fake_latency(ctx: MetricContext) -> float:
        """Counts the candidates timed."""
        timed.append(ctx.model)
        return float(len(timed))

    fake = dataclasses.replace(METRICS.get("latency"), compute=fake_latency)
    monkeypatch.setitem(METRICS._items, "latency", fake)
    model, space, x, y = jsc_s()
    configs = [space.config(i) for i in random_indexes(space, 3)]
    plans = [space.resolved(c) for c in configs]
    distinct = len({operations(p) for p in plans})
    assert 1 < distinct < len(configs)
    results = Evaluator(model, space, (x, y), ["latency"]).evaluate_many(configs)
    assert len(timed) == distinct
    by_ops = {}
    for plan, (metrics, _) in zip(plans, results, strict=True):
        assert by_ops.setdefault(operations(plan), metrics["latency"]) == metrics["latency"]
    Evaluator(model, space, (x, y), ["latency"], share_latency=False).evaluate_many(configs)
    assert len(timed) == distinct + len(configs)


def test_boundary_cache_pins_shared_inputs_and_keeps_the_latest_prefix():
    cache = BoundaryCache(pinned=1)
    t = [torch.full((4,), float(i)) for i in range(6)]
    a, b = Integer(4), Integer(8)
    cache.put((1, (0,), a), t[0])  # stage 1's input for each data_in: kept for good
    cache.put((1, (0,), b), t[1])
    cache.put((2, (0, 3), None), t[2])  # deeper: the latest prefix only, per kind
    cache.put((2, (0, 3), a), t[3])
    cache.put((2, (0, 5), None), t[4])
    assert cache.get((1, (0,), a)) is t[0] and cache.get((1, (0,), b)) is t[1]
    assert cache.get((2, (0, 3), None)) is None and cache.get((2, (0, 5), None)) is t[4]
    assert cache.get((2, (0, 3), a)) is t[3]  # quantized inputs have their own slot
    cache.put((2, (0, 5), b), t[5])
    assert cache.get((2, (0, 3), a)) is None and cache.get((2, (0, 5), b)) is t[5]
    assert cache.bytes == 4 * 16 and len(cache) == 4
    # A new prefix takes over the memory of the entry it replaces; pinned entries stay put.
    assert cache.take((2, (0, 7), None)) is t[4] and cache.get((2, (0, 5), None)) is None
    assert cache.take((1, (0,), a)) is None and cache.get((1, (0,), a)) is t[0]


def test_cached_activations_stay_bounded():
    model, space, x, y = jsc_s()
    evaluator = Evaluator(model, space, (x, y), METRIC_NAMES)
    cache = evaluator._runner.cache
    evaluator.evaluate_many([space.config(i) for i in range(64)])
    held = cache.bytes
    for start in range(64, 64 * 12, 64):  # consecutive: each prefix replaces the last one
        evaluator.evaluate_many([space.config(i) for i in range(start, start + 64)])
    assert cache.bytes <= held
    for i in random_indexes(space, 1):
        evaluator.evaluate(space.config(i))
    # The first layer's input once per data_in width (4, 8), two entries per later layer.
    assert len(cache) <= 2 + 2 * 4


def test_metrics_cache_stores_floats_compactly():
    cache = MetricsCache(["accuracy", "loss"])
    cache[(1, 2)] = {"loss": 0.5, "accuracy": 1, "extra": 3.0}
    assert cache[(1, 2)] == {"accuracy": 1.0, "loss": 0.5}
    assert list(cache) == [(1, 2)] and (1, 2) in cache and len(cache) == 1
    with pytest.raises(KeyError):
        cache[(3,)] = {"accuracy": 1.0}
    del cache[(1, 2)]
    assert len(cache) == 0
