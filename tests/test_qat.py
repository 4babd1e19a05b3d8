"""Quantization-aware training of one candidate (issue 21, item 1): the straight-through
gradient path against a step computed by hand, MASE's `basic_train` semantics (learning-rate
schedule, `num_samples`, gradient accumulation, no weight decay on biases and norms), the
determinism of a candidate's training, and memory that does not grow per candidate."""

from __future__ import annotations

import gc
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitscout.errors import ConfigError
from bitscout.evaluate.evaluator import Evaluator
from bitscout.evaluate.qat import Trainer, TrainSettings, lr_factor, param_groups
from bitscout.quant.formats import Integer
from bitscout.quant.layers import LayerQuant, QuantLinear, to_quant
from bitscout.quant.space import parse_space

# --- the reference: one SGD step written out in numpy ------------------------------------


def fixed(v: np.ndarray, width: int, frac: int) -> np.ndarray:
    """Signed fixed point, round half to even, saturating (MASE's integer quantizer)."""
    k = np.clip(np.round(v * 2.0**frac), -(2 ** (width - 1)), 2 ** (width - 1) - 1)
    return k / 2.0**frac


def ce_grad(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(mean cross-entropy)/d(logits)."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return p / len(y)


# W[0, 2] = 2.3 is beyond Integer(4, 2)'s largest value 1.75: a clipped weight still moves
# (the identity gradient everywhere, as MASE's quantizers have it)
W = np.array([[0.3, -0.8, 2.3], [0.6, 0.2, -1.7]])
B = np.array([0.1, -0.35])
X = np.array([[0.5, -1.2, 0.7], [1.9, 0.3, -0.4], [-0.6, 0.8, 0.25]])
Y = np.array([0, 1, 1])
LR = 0.5


def _layer(quant: LayerQuant) -> nn.Sequential:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W))
        lin.bias.copy_(torch.tensor(B))
    return nn.Sequential(QuantLinear.from_float(lin, quant))


def _one_sgd_step(model: nn.Module) -> None:
    """One batch of all three rows, one SGD step at a constant learning rate."""
    settings = TrainSettings(epochs=1, learning_rate=LR, optimizer="sgd", batch_size=3,
                             lr_scheduler="constant")  # fmt: skip
    x, y = torch.tensor(X, dtype=torch.float32), torch.tensor(Y)
    assert Trainer(x, y, settings).train(model, "tiny") == 1


def _expected(logits: np.ndarray, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weight and bias after one step, the gradient passed straight through every cast."""
    g = ce_grad(logits, Y)
    return W - LR * g.T @ xq, B - LR * g.sum(0)


def test_one_step_matches_a_straight_through_step_computed_by_hand():
    quant = LayerQuant(data_in=Integer(4, 2), weight=Integer(4, 2), bias=Integer(6, 3))
    model = _layer(quant)
    _one_sgd_step(model)
    xq, wq, bq = fixed(X, 4, 2), fixed(W, 4, 2), fixed(B, 6, 3)
    weight, bias = _expected(xq @ wq.T + bq, xq)
    trained = model[0]
    np.testing.assert_allclose(trained.weight.detach().double().numpy(), weight, atol=1e-6)
    np.testing.assert_allclose(trained.bias.detach().double().numpy(), bias, atol=1e-6)
    assert trained.weight[0, 2].item() != pytest.approx(2.3)  # the clipped weight moved


def test_accumulator_and_result_casts_pass_the_gradient_straight_through():
    # accum frac 3 < the products' 2 + 2: every product is rounded; the result rounds again
    quant = LayerQuant(data_in=Integer(4, 2), weight=Integer(4, 2), bias=Integer(6, 3),
                       accum=Integer(10, 3), result=Integer(6, 2))  # fmt: skip
    xq, wq, bq = fixed(X, 4, 2), fixed(W, 4, 2), fixed(B, 6, 3)
    products = fixed(xq[:, None, :] * wq[None, :, :], 10, 3)
    logits = fixed(fixed(bq, 10, 3) + products.sum(-1), 6, 2)  # no partial sum saturates

    probe = _layer(quant)
    out = probe(torch.tensor(X, dtype=torch.float32))
    np.testing.assert_array_equal(out.detach().double().numpy(), logits)
    out.sum().backward()
    grad = probe[0].weight.grad
    assert grad is not None and bool((grad != 0).any())
    np.testing.assert_allclose(grad.double().numpy(), np.ones((3, 2)).T @ xq, atol=1e-6)

    model = _layer(quant)
    _one_sgd_step(model)
    weight, bias = _expected(logits, xq)
    np.testing.assert_allclose(model[0].weight.detach().double().numpy(), weight, atol=1e-6)
    np.testing.assert_allclose(model[0].bias.detach().double().numpy(), bias, atol=1e-6)


def test_a_result_typed_convolution_passes_the_gradient_straight_through():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3)
    quant = LayerQuant(data_in=Integer(4, 2), weight=Integer(4, 2), result=Integer(5, 1))
    layer = to_quant(conv, quant)
    x = torch.randn(2, 2, 5, 5)
    upstream = torch.randn(2, 3, 3, 3)
    (layer(x) * upstream).sum().backward()
    # the reference: the float convolution of the quantized operands, its result cast ignored
    xq = torch.tensor(fixed(x.double().numpy(), 4, 2))
    wq = torch.tensor(fixed(conv.weight.detach().double().numpy(), 4, 2)).requires_grad_()
    (F.conv2d(xq, wq, conv.bias.detach().double()) * upstream.double()).sum().backward()
    assert layer.weight.grad is not None and bool((layer.weight.grad != 0).any())
    torch.testing.assert_close(layer.weight.grad.double(), wq.grad, atol=1e-5, rtol=1e-5)


# --- MASE's semantics -------------------------------------------------------------------


def transformers_factor(name: str, step: int, warm: int, total: int) -> float:
    """transformers' `get_scheduler(name, num_warmup_steps=warm, num_training_steps=total)`
    multiplier at `step` (`optimization.py`; "constant" takes no warm-up there)."""
    if name == "constant":
        return 1.0
    if step < warm:
        return float(step) / float(max(1, warm))
    if name == "constant_with_warmup":
        return 1.0
    if name == "linear":
        return max(0.0, float(total - step) / float(max(1, total - warm)))
    progress = float(step - warm) / float(max(1, total - warm))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


class Probe(nn.Module):
    """One weight whose gradient is 1 at every batch (with `unit_loss`): SGD moves it by
    -lr * factor per optimizer step, so its values show the schedule actually used."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.seen: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(float(self.w.detach()))
        return self.w * torch.ones(len(x), dtype=torch.float64)


def unit_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.mean()


def _probe_run(rows: int = 10, **settings) -> tuple[Probe, int]:
    s = TrainSettings(**{"optimizer": "sgd", "learning_rate": 1.0, "batch_size": 2, **settings})
    probe = Probe()
    x, y = torch.zeros(rows, 1), torch.zeros(rows, dtype=torch.long)
    return probe, Trainer(x, y, s, unit_loss).train(probe, "probe")


def _steps(probe: Probe) -> list[float]:
    """The learning rate of each optimizer step (the weight's nonzero moves, sign flipped)."""
    values = [*probe.seen, float(probe.w.detach())]
    return [a - b for a, b in itertools.pairwise(values) if a != b]


@pytest.mark.parametrize("warm", [0, 4])
@pytest.mark.parametrize("name", ["linear", "cosine", "constant", "constant_with_warmup"])
def test_the_schedule_is_transformers_over_max_epochs_of_steps(name, warm):
    probe, epochs = _probe_run(epochs=3, lr_scheduler=name, warmup_steps=warm)
    assert epochs == 3 and len(probe.seen) == 15  # 10 rows / 2 = 5 steps, 3 epochs
    expected = [transformers_factor(name, k, warm, 15) for k in range(15)]
    values = [*probe.seen, float(probe.w.detach())]
    moves = [a - b for a, b in itertools.pairwise(values)]
    np.testing.assert_allclose(moves, expected, atol=1e-12)


def test_the_schedule_by_hand():
    s = TrainSettings(lr_scheduler="linear", warmup_steps=3)
    assert [lr_factor(s, k, 15) for k in (0, 1, 3, 9, 15)] == pytest.approx([0, 1 / 3, 1, 0.5, 0])
    s = TrainSettings(lr_scheduler="cosine", warmup_steps=0)
    assert [lr_factor(s, k, 10) for k in (0, 5, 10)] == pytest.approx([1, 0.5, 0], abs=1e-12)
    s = TrainSettings(lr_scheduler="constant", warmup_steps=5)  # warm-up ignored, as there
    assert lr_factor(s, 0, 10) == 1.0
    s = TrainSettings(lr_scheduler="linear", warmup_steps=20)  # a warm-up longer than training
    assert [lr_factor(s, k, 10) for k in (5, 10)] == pytest.approx([0.25, 0.5])


def test_num_samples_caps_the_steps_but_not_the_schedule():
    probe, epochs = _probe_run(epochs=3, num_samples=7)  # ceil(7 / 2) = 4 batches
    assert (len(probe.seen), epochs) == (4, 1)
    # the linear schedule still spans 3 epochs of 5 steps (MASE's num_training_steps)
    assert _steps(probe) == pytest.approx([(15 - k) / 15 for k in range(4)], abs=1e-12)
    probe, epochs = _probe_run(epochs=3, num_samples=12)  # 6 batches: into the 2nd epoch
    assert (len(probe.seen), epochs) == (6, 2)
    probe, epochs = _probe_run(epochs=2, num_samples=10**6)  # more than there is: all of it
    assert (len(probe.seen), epochs) == (10, 2)


def test_accumulation_steps_every_k_batches_and_at_each_epoch_end():
    # 5 batches an epoch, 2 accumulated: steps after batches 2 and 4, and the 5th alone at the
    # epoch's end; each batch's loss is divided by 2, as MASE does
    probe, _ = _probe_run(epochs=2, accumulation=2, lr_scheduler="constant")
    assert _steps(probe) == pytest.approx([1.0, 1.0, 0.5] * 2)


def _linear_model() -> nn.Linear:
    torch.manual_seed(3)
    return nn.Linear(4, 3)


def _trained(batch_size: int, accumulation: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    model = _linear_model()
    settings = TrainSettings(epochs=1, learning_rate=0.3, optimizer="sgd", lr_scheduler="constant",
                             batch_size=batch_size, accumulation=accumulation)  # fmt: skip
    Trainer(x, y, settings).train(model, "same")
    return model.weight.detach().clone()


def test_two_accumulated_batches_are_one_step_on_both():
    accumulated = _trained(batch_size=4, accumulation=2)
    torch.testing.assert_close(accumulated, _trained(batch_size=8, accumulation=1))
    assert not torch.allclose(accumulated, _trained(batch_size=4, accumulation=1))  # 2 steps


def _normed() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.LayerNorm(4), nn.Linear(4, 3))


def test_no_weight_decay_on_biases_and_normalization_weights():
    model = _normed()
    decayed, exempt = param_groups(model, 0.1)
    assert decayed["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(exempt["params"]) == 6  # two biases, two norms' weights and biases


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_weight_decay_shrinks_only_the_decayed_weights(optimizer):
    # a zero loss: the only move is the decay, w * (1 - lr * wd), for SGD and AdamW alike
    model, before = _normed(), _normed()
    x, y = torch.randn(8, 4), torch.zeros(8, dtype=torch.long)
    settings = TrainSettings(epochs=1, batch_size=8, optimizer=optimizer, learning_rate=0.5,
                             weight_decay=0.1, lr_scheduler="constant")  # fmt: skip
    Trainer(x, y, settings, lambda out, t: 0 * out.sum()).train(model, "decay")
    for (name, p), q in zip(model.named_parameters(), before.parameters(), strict=True):
        factor = 0.95 if name in ("0.weight", "3.weight") else 1.0
        torch.testing.assert_close(p.detach(), q.detach() * factor, msg=name)


# --- determinism ------------------------------------------------------------------------


class Dropped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(6, 16), nn.Dropout(0.3), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def _dropped_weights(identity: str, noise: int) -> list[torch.Tensor]:
    torch.manual_seed(noise)  # what ran before: another global random state
    torch.randn(noise + 1)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 6, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    torch.manual_seed(7)
    model = Dropped()
    Trainer(x, y, TrainSettings(epochs=2, batch_size=16, seed=5)).train(model, identity)
    return [p.detach().clone() for p in model.parameters()]


def test_a_candidate_trains_to_the_same_weights_whatever_ran_before():
    first, again = _dropped_weights("a", 0), _dropped_weights("a", 123)
    assert all(torch.equal(p, q) for p, q in zip(first, again, strict=True))
    other = _dropped_weights("b", 0)  # another candidate: its own batch order and dropout
    assert not all(torch.equal(p, q) for p, q in zip(first, other, strict=True))


def test_training_leaves_the_global_random_state_alone():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 6, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    model = Dropped()
    torch.manual_seed(11)
    state = torch.get_rng_state()
    Trainer(x, y, TrainSettings(epochs=1, batch_size=8)).train(model, "a")
    assert torch.equal(state, torch.get_rng_state())


# --- errors and memory ------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss_fn", [lambda out, y: F.cross_entropy(out, y) * math.nan, None], ids=["nan", "huge-lr"]
)
def test_a_loss_that_is_not_finite_is_a_config_error(loss_fn):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    lr = 1e-3 if loss_fn is not None else 1e30
    settings = TrainSettings(epochs=3, batch_size=8, learning_rate=lr)
    with pytest.raises(ConfigError) as err:
        Trainer(x, y, settings, loss_fn).train(Dropped(), "a")
    assert err.value.key == "learning_rate" and "\n" not in str(err.value)
    assert "made the training loss" in str(err.value)


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch.distributed's deprecated aliases
        warnings.simplefilter("ignore", FutureWarning)
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_memory_does_not_grow_per_candidate():
    torch.manual_seed(0)
    model = Tiny().eval()
    widths = [2, 3, 4, 5, 6, 7, 8]
    layer = {
        "name": ["integer"],
        "data_in_width": widths,
        "weight_width": widths,
        "bias_width": [4, 8],
    }  # fmt: skip  (98 candidates)
    space = parse_space({"setup": {"by": "name"}, "seed": {"default": {"config": layer}}}, model)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 8, generator=gen), torch.randint(0, 3, (48,), generator=gen)
    trainer = Trainer(x[:32], y[:32], TrainSettings(epochs=1, batch_size=16))
    evaluator = Evaluator(model, space, (x[32:], y[32:]), ["accuracy", "loss"], trainer=trainer)

    def after(start: int, stop: int) -> int:
        for i in range(start, stop):
            evaluator.evaluate_many([space.config(i)], cache=False)
        return _live_tensors()

    ten = after(0, 10)
    fifty = after(10, 50)
    assert fifty - ten <= 5, (ten, fifty)  # 40 more candidates: no tensor kept per candidate
