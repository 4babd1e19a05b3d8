"""Tests for bitscout.evaluate.metrics' forward metrics (accuracy and loss, alone and batched
over candidates, NaN and inf logits) and latency (threads restored, budgets): every expected
value is worked out by hand. Split from tests/test_metrics.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_support import _ctx, _value
from torch import nn

from bitscout.evaluate.metrics import (
    MetricContext,
    compute_metrics,
    forward_sums,
    metric,
)

# --- forward metrics ------------------------------------------------------------------------


LOGITS = [[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.0, 0.2, 3.0], [1.0, 3.0, 0.0]]
TARGETS = [0, 1, 1, 0]


def test_accuracy_and_loss_by_hand():
    ctx = _ctx("jsc-tiny", logits=torch.tensor(LOGITS), targets=torch.tensor(TARGETS))
    values = compute_metrics(["accuracy", "loss"], ctx)
    assert values["accuracy"] == 2 / 4  # rows 0 and 1 are right
    z = np.array(LOGITS)
    log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(4), TARGETS])
    assert values["loss"] == pytest.approx(expected, rel=1e-6)
    assert all(type(v) is float for v in values.values())


def test_forward_metric_without_logits_raises():
    with pytest.raises(ValueError, match="logits"):
        compute_metrics(["accuracy"], _ctx("jsc-tiny"))
    with pytest.raises(ValueError, match="logits"):
        compute_metrics(["loss"], _ctx("jsc-tiny", targets=torch.tensor(TARGETS)))


def test_forward_metric_rejects_float_targets():
    ctx = _ctx("jsc-tiny", logits=torch.tensor(LOGITS), targets=torch.tensor(TARGETS) * 1.0)
    with pytest.raises(ValueError, match="integer"):
        compute_metrics(["accuracy"], ctx)


def _candidates_logits(seed: int = 0) -> torch.Tensor:
    """Logits [rows, candidates, classes] with what the fast path must get right: exact ties
    (all-zero rows after a ReLU, repeated maxima), signed zeros, huge and tiny values."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(300, 4, 5, generator=gen) * 4
    logits[:, 0] = logits[:, 0].clamp(min=0).round()  # many ties, many all-zero rows
    logits[:50, 1] = -0.0
    logits[50:60, 1, 2:] = 0.0
    logits[:, 2] *= 1e4  # confident rows: tiny losses next to huge ones
    logits[:, 3, 1] = 7.0
    return logits


def test_batched_forward_metrics_equal_each_candidate_alone():
    logits = _candidates_logits()
    targets = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(1))
    sums = forward_sums(["accuracy", "loss", "flops"], logits, targets)
    assert set(sums) == {"accuracy", "loss"}  # static metrics have no batched form
    for i in range(logits.shape[1]):
        ctx = _ctx("jsc-tiny", logits=logits[:, i], targets=targets)
        want = compute_metrics(["accuracy", "loss"], ctx)
        assert sums["accuracy"][i] / 300 == want["accuracy"]
        assert sums["loss"][i] / 300 == pytest.approx(want["loss"], rel=1e-12)
        z = logits[:, i].double().numpy()
        top = z.max(axis=1, keepdims=True)
        log_softmax = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
        expected = -log_softmax[np.arange(300), targets.numpy()].sum()
        assert sums["loss"][i] == pytest.approx(expected, rel=1e-12)


def test_batched_forward_metrics_with_nan_and_inf_logits():
    logits = _candidates_logits(2)
    logits[3, 0, 2] = float("nan")  # argmax picks a NaN, as torch.argmax does
    logits[4, 0, 1] = float("nan")
    logits[5, 1, 0] = float("inf")
    targets = torch.tensor([2, 1] * 150)
    sums = forward_sums(["accuracy", "loss"], logits, targets)
    for i in range(2):
        ctx = _ctx("jsc-tiny", logits=logits[:, i], targets=targets)
        assert sums["accuracy"][i] / 300 == compute_metrics(["accuracy"], ctx)["accuracy"]
    assert np.isnan(sums["loss"][0]) and np.isnan(sums["loss"][1])
    assert np.isfinite(sums["loss"][2])


def test_batched_forward_metrics_check_their_input():
    with pytest.raises(ValueError, match="integer targets"):
        forward_sums(["accuracy"], torch.zeros(3, 2, 5), torch.zeros(3))
    with pytest.raises(ValueError, match=r"logits \[b, g, classes\]"):
        forward_sums(["loss"], torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))
    assert forward_sums(["flops"], torch.zeros(3, 5), torch.zeros(3)) == {}
    with pytest.raises(ValueError, match="only forward metrics"):
        metric("odd", unit="x", direction="minimize", kind="static", batched=lambda z, y: z)


# --- latency --------------------------------------------------------------------------------


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(16, 5)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def _latency_ctx(model: nn.Module, **kw) -> MetricContext:
    return _ctx("jsc-tiny", model=model, inputs=torch.randn(32, 16), **kw)


def test_latency_positive_and_restores_threads():
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = Counting()
        ctx = _latency_ctx(model, latency_repeats=3, latency_warmup=2, latency_budget_s=60.0)
        value = _value("latency", ctx)
        assert type(value) is float and value > 0
        assert model.calls == 2 + 3
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)


class Failing(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_latency_restores_threads_on_error():
    threads = torch.get_num_threads()
    model = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        _value("latency", _latency_ctx(model))
    assert torch.get_num_threads() == threads
    assert model.training


def test_latency_zero_budget_times_once():
    threads = torch.get_num_threads()
    model = Counting()
    _value("latency", _latency_ctx(model, latency_warmup=0, latency_budget_s=0.0))
    assert model.calls == 1
    model = Counting()
    _value("latency", _latency_ctx(model, latency_warmup=2, latency_budget_s=0.0))
    assert model.calls == 2 + 1
    assert torch.get_num_threads() == threads


def test_latency_needs_model_and_inputs():
    with pytest.raises(ValueError, match="model and inputs"):
        compute_metrics(["latency"], _ctx("jsc-tiny", inputs=torch.zeros(2, 16)))
