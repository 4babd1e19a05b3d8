"""The fast engine computes what the model computes (issue 20, item 2).

A wrapper whose forward has logic beyond module calls traces as a clean chain: the fast
engine scored it as if it were the chain. The engine now runs only forwards proven to be
module calls alone, is checked against the plain path on the space's extreme candidates, and
a seeded sample of its candidates is re-derived by the plain path during a search. The
reference is the candidate built by `quantize_model` and run through its own forward.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitscout.errors import SearchFailed
from bitscout.evaluate.audit import Audit, extremes
from bitscout.evaluate.engine.chain import chain_of
from bitscout.evaluate.engine.runner import Runner
from bitscout.evaluate.evaluator import Evaluator
from bitscout.quant import quantize_model
from bitscout.quant.layers import QuantLinear
from bitscout.quant.space import SearchSpace
from bitscout.zoo.data import load_dataset


def _seq() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


class NanAtTwoBits(nn.Module):
    """The hostile wrapper: NaN outputs once its first layer holds 2-bit weights."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = _seq()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.seq(x)
        first = self.seq[0]
        if isinstance(first, QuantLinear) and getattr(first.quant.weight, "width", 0) == 2:
            return out * float("nan")
        return out


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seq = _seq()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", seed=3)
    return data.x_val, data.y_val


def _space(model: nn.Module) -> SearchSpace:
    layer = {"name": ["integer"], "data_in_width": [8], "weight_width": [2, 4, 8]}
    return SearchSpace(model, "name", {"default": {"name": ["NA"]}, "seq.0": layer})


def _plain(model, space, config, x, y) -> dict[str, float]:
    """The reference: the candidate built and run through its own forward."""
    with torch.inference_mode():
        logits = quantize_model(model, space.plan(config)).eval()(x)
    accuracy = (logits.argmax(dim=1) == y).sum().item() / len(y)
    return {"accuracy": accuracy, "loss": F.cross_entropy(logits, y).item()}


def _same(got: dict[str, float], want: dict[str, float]) -> bool:
    """Accuracy exactly; the loss to float32's rounding of a mean over the rows."""
    loss = got["loss"] == pytest.approx(want["loss"], rel=1e-5, nan_ok=True)
    return got["accuracy"] == want["accuracy"] and loss


def _trained(cls: type[nn.Module], x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = cls()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_a_wrapper_with_hidden_logic_is_scored_as_it_computes(digits):
    x, y = digits
    model = _trained(NanAtTwoBits, x, y)
    chain, why = chain_of(model)
    assert chain is None and "NanAtTwoBits.forward" in why and "control flow" in why
    space = _space(model)
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "loss"])
    assert any("fast engine off" in n and "NanAtTwoBits.forward" in n for n in evaluator.notes)
    for i in range(space.size):
        config = space.config(i)
        got, _ = evaluator.evaluate(config)
        assert _same(got, _plain(model, space, config, x, y)), config
    two_bits, _ = evaluator.evaluate(space.config(0))
    assert two_bits["loss"] != two_bits["loss"]  # NaN, as the model computes


def test_hidden_logic_in_a_helper_a_decorator_or_a_hook_is_found():
    class Helper(Plain):
        def forward(self, x):
            return self._finish(self.seq(x))

        def _finish(self, out):
            return out if self.training else out.clone()

    def logged(fn):
        @functools.wraps(fn)
        def wrapper(self, x):
            return fn(self, x)

        return wrapper

    class Decorated(Plain):
        @logged
        def forward(self, x):
            for _ in range(1):
                x = self.seq(x)
            return x

    assert "Helper._finish" in chain_of(Helper())[1]
    assert "Decorated.forward" in chain_of(Decorated())[1]
    hooked = Plain()
    hooked.seq[1].register_forward_hook(lambda module, args, out: out * 2)
    assert chain_of(hooked)[0] is None and "forward hook on module 'seq.1'" in chain_of(hooked)[1]
    assert chain_of(Plain())[0] is not None


def _negated(monkeypatch) -> None:
    """Make the fast engine wrong: negated logits (another class, another loss)."""
    real = Runner.logits

    def wrong(self, stage, members):
        for block in real(self, stage, members):
            yield -block

    monkeypatch.setattr(Runner, "logits", wrong)


def test_an_engine_wrong_on_the_extremes_gives_way_to_the_plain_path(digits, monkeypatch):
    x, y = digits
    model = _trained(Plain, x, y)
    space = _space(model)
    assert [c["seq_0/weight_width"] for c in extremes(space)] == [2, 8]
    _negated(monkeypatch)
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "loss"])
    assert evaluator._runner is None
    (note,) = [n for n in evaluator.notes if "fast engine off" in n]
    assert "extreme candidate {'seq_0/weight_width': 2}" in note
    assert "by the fast engine" in note and "by the plain path" in note
    for i in range(space.size):
        got, _ = evaluator.evaluate(space.config(i))
        assert _same(got, _plain(model, space, space.config(i), x, y))


def test_an_engine_wrong_later_stops_with_both_figures(digits, monkeypatch):
    x, y = digits
    model = _trained(Plain, x, y)
    space = _space(model)
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "loss"])
    assert evaluator._runner is not None  # right on the extremes
    _negated(monkeypatch)  # wrong from now on
    config = space.config(1)
    want = _plain(model, space, config, x, y)
    with pytest.raises(SearchFailed) as failed:
        evaluator.evaluate(config)
    message = str(failed.value)
    both = f"accuracy = 0.0 by the fast engine, {want['accuracy']!r} by the plain path"
    assert both in message
    assert "by the fast engine" in message and "seq_0/weight_width': 4" in message
    assert (evaluator.audit.rederived, evaluator.audit.matched) == (1, 0)


def test_the_audit_samples_seeded_at_the_rate_and_at_least_two():
    first = Audit(rate=1 / 50, seed=7)
    picks = [i for i in range(5000) if first.pick(1)]
    assert picks[:2] == [0, 1]
    assert 60 <= len(picks) <= 150  # 2 + about 5000 / 50
    again = Audit(rate=1 / 50, seed=7)
    assert again.pick(5000) == picks  # the same sample, whatever the blocks
    assert Audit(rate=1 / 50, seed=8).pick(5000) != picks
    assert Audit(rate=0).pick(100) == []
    assert len(Audit(rate=1).pick(100)) == 100


def test_the_audit_rederives_and_counts_matches(digits):
    x, y = digits
    model = _trained(Plain, x, y)
    space = _space(model)
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "loss"], audit=Audit(rate=1))
    assert evaluator._runner is not None
    evaluator.evaluate_many([space.config(i) for i in range(space.size)])
    want = {"rate": 1, "engine": "fast", "scored": 3, "rederived": 3, "matched": 3}
    assert evaluator.audit.summary() == want
