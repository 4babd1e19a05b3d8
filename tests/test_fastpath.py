"""The fast path against the plain path: build each candidate with `quantize_model`, run it
on the whole split, score it with the unbatched metrics. Every reuse (float head once, cached
weights and inputs, prefix sharing, stacked weights, blocks of rows) must keep the predicted
class of every sample, hence the accuracy, and the loss up to the rounding of grouped sums.
The engine's parts one by one are checked in tests/test_fastpath_engine.py.
"""

from __future__ import annotations

import random

import pytest
import torch
from fastpath_support import (
    CASES,
    METRIC_NAMES,
    _one_thread,  # noqa: F401 - the autouse fixture
    assert_same,
    digits_layernorm_gelu,
    plain_logits,
    plain_metrics,
    random_indexes,
)

from bitscout.evaluate.engine.candidates import Resolver
from bitscout.evaluate.engine.chain import trace_chain
from bitscout.evaluate.engine.runner import Runner
from bitscout.evaluate.evaluator import Evaluator


def test_a_chain_with_layernorm_and_gelu_takes_the_fast_path():
    model, space, x, y = digits_layernorm_gelu()
    assert Evaluator(model, space, (x, y), ["accuracy"])._runner is not None


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    model, space, x, y = CASES[request.param]()
    refs = {}
    for i in random_indexes(space, 7):
        refs[i] = plain_metrics(model, space, space.config(i), x, y)
    return model, space, x, y, refs


def test_evaluate_one_at_a_time_matches_plain_path(case):
    model, space, x, y, refs = case
    evaluator = Evaluator(model, space, (x, y), METRIC_NAMES)
    for i, want in refs.items():  # random order: caches of earlier candidates get in the way
        got, cached = evaluator.evaluate(space.config(i))
        assert not cached
        assert_same(got, want)


def test_evaluate_many_matches_plain_path_on_consecutive_chunks(case):
    model, space, x, y, refs = case
    # Small blocks: many blocks of rows per group, on small data.
    evaluator = Evaluator(model, space, (x, y), METRIC_NAMES, block_bytes=2**16)
    for start in random.Random(11).sample(range(0, space.size, 20), 3):  # disjoint chunks
        configs = [space.config(i) for i in range(start, min(start + 20, space.size))]
        results = evaluator.evaluate_many(configs)
        assert len(results) == len(configs)
        for config, (got, cached) in zip(configs, results, strict=True):
            assert not cached
            assert_same(got, plain_metrics(model, space, config, x, y))
    # Also scattered candidates handed over together, each in its own place of the result.
    results = evaluator.evaluate_many([space.config(i) for i in refs])
    for (got, _), want in zip(results, refs.values(), strict=True):
        assert_same(got, want)


def test_every_sample_gets_the_plain_path_class(case):
    model, space, x, _, refs = case
    resolver = Resolver(space)
    runner = Runner(trace_chain(model), x, fixed=resolver.fixed, block_bytes=2**18)
    # Candidates stacked at the last layer, then at an earlier one (the last layer's fields
    # fixed, so quantized later layers run on the stacked rows), then scattered ones.
    stride = space.layers[-1].size  # candidates of the last layer key
    indexes = [*range(min(space.size, 24)), *range(0, space.size, stride)[:24], *refs]
    chunk = [space.config(i) for i in indexes]
    candidates = [runner.candidate(k, resolver.plan(k)) for k in map(resolver.key, chunk)]
    groups = runner.groups(candidates)
    assert sorted(i for _, members in groups for i in members) == list(range(len(chunk)))
    with torch.inference_mode():
        for stage, members in groups:
            logits = torch.cat(list(runner.logits(stage, [candidates[i] for i in members])))
            for column, i in enumerate(members):
                want = plain_logits(model, space, chunk[i], x)
                assert torch.equal(logits[:, column].argmax(dim=1), want.argmax(dim=1))
                torch.testing.assert_close(logits[:, column], want, rtol=1e-5, atol=1e-5)
