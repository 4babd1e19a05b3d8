"""Tests for bitscout.evaluate.metrics: every expected value is worked out by hand or by another tool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bitscout.errors import ConfigError
from bitscout.evaluate.metrics import (
    METRICS,
    MetricContext,
    compute_metrics,
    forward_sums,
    get_metric,
    metric,
)
from bitscout.evaluate.profile import profile_model
from bitscout.quant.formats import Integer
from bitscout.quant.layers import LayerQuant
from bitscout.zoo.models import build_model

TOY_LAYERS = ("seq_blocks.2", "seq_blocks.5", "seq_blocks.8")


def _ctx(name: str, plan: dict[str, LayerQuant | None] | None = None, **kw) -> MetricContext:
    model = build_model(name)
    profile = profile_model(model, torch.zeros(1, 16))
    if plan is None:
        plan = {layer.path: None for layer in profile.layers}
    return MetricContext(profile=profile, plan=plan, **kw)


def _q(weight: int | None = None, bias: int | None = None, data_in: int | None = None):
    def fmt(width: int | None) -> Integer | None:
        return None if width is None else Integer(width)

    return LayerQuant(data_in=fmt(data_in), weight=fmt(weight), bias=fmt(bias))


def _value(name: str, ctx: MetricContext) -> float:
    return compute_metrics([name], ctx)[name]


# --- profile and static metrics -------------------------------------------------------------


def test_jsc_tiny_profile_and_model_size():
    ctx = _ctx("jsc-tiny")
    # BatchNorm1d(16): 16 weight + 16 bias; Linear(16, 5): 80 weight + 5 bias.
    assert ctx.profile.param_count == 16 + 16 + 80 + 5 == 117
    assert _value("model_size", ctx) == 117.0
    (layer,) = ctx.profile.layers
    assert (layer.path, layer.type, layer.macs) == ("seq_blocks.2", "linear", 80)
    assert (layer.weight_count, layer.bias_count) == (80, 5)


def test_profile_leaves_model_untouched():
    model = build_model("jsc-tiny")
    model.train()
    bn = model.seq_blocks[0]
    before = bn.running_mean.clone()
    profile_model(model, torch.randn(1, 16) * 5 + 3)
    assert model.training and bn.training
    assert torch.equal(bn.running_mean, before)
    assert all(not m._forward_hooks for m in model.modules())


def test_profile_rejects_a_batch():
    with pytest.raises(ValueError, match="batch of one"):
        profile_model(build_model("jsc-tiny"), torch.zeros(2, 16))


class _Mix(nn.Module):
    """A matrix product inline in forward, beside modules without an analytic FLOP rule."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 8))
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return torch.softmax(self.norm(x) @ self.w, dim=-1) + x


def test_flops_of_modules_without_a_rule_come_from_flop_counter_mode():
    model = nn.Sequential(nn.Linear(4, 8), _Mix(), nn.GELU(), nn.Linear(8, 2))
    profile = profile_model(model, torch.zeros(1, 4))
    # Linear 2*4*8 and 2*8*2 by rule, GELU 8 by rule; the inline 8x8 product 2*8*8 as counted
    # by FlopCounterMode; LayerNorm, softmax and the residual add count 0 there.
    assert profile.flops == 2 * 4 * 8 + 2 * 8 * 8 + 8 + 2 * 8 * 2
    assert [layer.macs for layer in profile.layers] == [32, 16]


def test_model_size_bits():
    quantized = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=4, bias=8)})
    # BN's 32 parameters stay float; the Linear's 80 weights at 4 bits, 5 biases at 8 bits.
    assert _value("model_size_bits", quantized) == 32 * 32 + 80 * 4 + 5 * 8
    assert _value("model_size_bits", _ctx("jsc-tiny")) == 117 * 32
    half = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=4)})  # float bias counts 32 bits
    assert _value("model_size_bits", half) == 32 * 32 + 80 * 4 + 5 * 32


def test_plan_for_another_model_is_refused():
    ctx = _ctx("jsc-tiny", {"seq_blocks.9": None})
    with pytest.raises(ValueError, match="plan"):
        compute_metrics(["bops"], ctx)


def test_average_bitwidth_and_memory_density():
    plan = dict(zip(TOY_LAYERS, (_q(weight=2), _q(weight=4), _q(weight=8)), strict=True))
    ctx = _ctx("jsc-toy", plan)
    # Linear weights: 16*8 = 128, 8*8 = 64, 8*5 = 40.
    expected = (2 * 128 + 4 * 64 + 8 * 40) / (128 + 64 + 40)
    assert _value("average_bitwidth", ctx) == pytest.approx(expected)
    assert _value("memory_density", ctx) == pytest.approx(32 / expected)

    assert _value("average_bitwidth", _ctx("jsc-toy")) == 32.0
    assert _value("memory_density", _ctx("jsc-toy")) == 1.0

    one_float = _ctx("jsc-toy", {**plan, "seq_blocks.2": None})
    assert _value("average_bitwidth", one_float) == pytest.approx((4 * 64 + 8 * 40) / (64 + 40))

    float_weight = _ctx("jsc-toy", {**plan, "seq_blocks.2": _q(data_in=8)})
    expected = (32 * 128 + 4 * 64 + 8 * 40) / (128 + 64 + 40)
    assert _value("average_bitwidth", float_weight) == pytest.approx(expected)


@pytest.mark.parametrize(("name", "features"), [("jsc-s", 16), ("mlp", 64), ("cnn", 64)])
def test_layer_flops_agree_with_flop_counter(name, features):
    model = build_model(name).eval()
    sample = torch.randn(1, features)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(sample)
    profile = profile_model(model, sample)
    assert counter.get_total_flops() > 0
    assert 2 * sum(layer.macs for layer in profile.layers) == counter.get_total_flops()


def test_whole_model_flops_by_hand():
    # BN 16 elements * 2, ReLU 16, Linear 2 * 16 * 5, ReLU 5.
    assert _value("flops", _ctx("jsc-tiny")) == 16 * 2 + 16 + 2 * 16 * 5 + 5 == 213
    quantized = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=2, data_in=2)})
    assert _value("flops", quantized) == 213


def test_cnn_flops_by_hand():
    c = 8
    model = build_model("cnn", channels=c)
    profile = profile_model(model, torch.zeros(1, 64))
    conv1 = 8 * 8 * c * (1 * 9)  # output elements * in_channels * kernel
    conv2 = 4 * 4 * 2 * c * (c * 9)
    linear = 2 * c * 2 * 2 * 10
    relu = 8 * 8 * c + 4 * 4 * 2 * c
    pools = 4 * 4 * c * 3 + 2 * 2 * 2 * c * 3  # max over 2x2: 3 comparisons per output
    assert profile.flops == 2 * (conv1 + conv2 + linear) + relu + pools
    assert [layer.type for layer in profile.layers] == ["conv2d", "conv2d", "linear"]


def test_conv1d_groups_and_avg_pool_by_hand():
    model = nn.Sequential(
        nn.Unflatten(1, (2, 8)),
        nn.Conv1d(2, 4, 3, padding=1, groups=2),
        nn.BatchNorm1d(4),
        nn.AvgPool1d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(16, 3),
        nn.Tanh(),
    )
    sample = torch.randn(1, 16)
    profile = profile_model(model, sample)
    conv_macs = 4 * 8 * (2 // 2) * 3  # output elements * in_channels/groups * kernel
    assert [(s.type, s.macs) for s in profile.layers] == [("conv1d", conv_macs), ("linear", 48)]
    assert (profile.layers[0].weight_count, profile.layers[0].bias_count) == (4 * 1 * 3, 4)
    bn, pool, tanh = 4 * 8 * 2, 4 * 4 * 2, 3
    assert profile.flops == 2 * (conv_macs + 48) + bn + pool + tanh
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(sample)
    assert counter.get_total_flops() == 2 * (conv_macs + 48)


def test_bops_by_hand():
    quantized = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=4, data_in=8)})
    assert _value("bops", quantized) == 80 * 4 * 8
    assert _value("bops", _ctx("jsc-tiny")) == 80 * 32 * 32
    weight_only = _ctx("jsc-tiny", {"seq_blocks.2": _q(weight=4)})
    assert _value("bops", weight_only) == 80 * 4 * 32


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


# --- registry -------------------------------------------------------------------------------


def test_unknown_metric_lists_known():
    with pytest.raises(ConfigError, match="accuracy") as info:
        get_metric("acuracy", "search.metrics")
    assert info.value.key == "search.metrics"
    with pytest.raises(ConfigError, match="accuracy"):
        compute_metrics(["nope"], _ctx("jsc-tiny"))


def test_every_metric_is_documented():
    expected = {
        "accuracy", "loss", "latency", "model_size", "model_size_bits", "flops", "bops",
        "average_bitwidth", "memory_density",
    }  # fmt: skip
    assert expected <= set(METRICS.names())
    for name in METRICS:
        m = get_metric(name)
        assert m.name == name
        assert m.doc.strip() and m.unit.strip()
        assert m.direction in ("maximize", "minimize")
        assert m.kind in ("forward", "static", "timing")
    assert get_metric("accuracy").direction == "maximize"
    assert get_metric("latency").kind == "timing"


# --- the user's metrics (issue 20, item 10) -------------------------------------------------

RESERVED_NAMES = ["objective", "number", "state", "reason", "cached", "schema_version",
                  "duration_s", "feasible", "proposals", "scaled_r2", "objective_r2"]  # fmt: skip


@pytest.fixture(scope="module")
def user_inputs() -> tuple[nn.Module, tuple[np.ndarray, np.ndarray], dict]:
    from sklearn.datasets import load_digits

    import bitscout

    x, y = load_digits(return_X_y=True)
    x, y = (x[:300] / 16.0).astype(np.float32), y[:300]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    bitscout.train(model, (x, y), bitscout.TrainOptions(epochs=30, learning_rate=1e-2))
    layer = {"name": ["integer"], "data_in_width": [3, 8], "weight_width": [2, 8],
             "bias_width": [8]}  # fmt: skip
    space = {"setup": {"by": "name"}, "seed": {"default": {"config": layer}}}
    return model, (x, y), space


def _agreement(model: nn.Module, data: tuple[np.ndarray, np.ndarray]) -> float:
    """The fraction of rows predicted right, computed by the user."""
    with torch.no_grad():
        return float((model(torch.from_numpy(data[0])).argmax(1).numpy() == data[1]).mean())


@pytest.mark.parametrize("name", RESERVED_NAMES)
def test_a_metric_named_like_an_output_column_is_refused_by_both_doors(
    name, monkeypatch, user_inputs
):
    import bitscout

    monkeypatch.setattr(METRICS, "_items", dict(METRICS._items))  # registered for this test only
    with pytest.raises(ConfigError, match=rf"^metrics\.{name}: is reserved for an output column"):
        bitscout.register_metric(name, _agreement)
    assert name not in METRICS
    model, data, space = user_inputs
    with pytest.raises(ConfigError, match=rf"^metrics\.{name}: is reserved for an output column"):
        bitscout.search(model, data, space, metrics={name: _agreement}, quiet=True)


def test_a_users_metric_and_its_constraint_survive_the_run(tmp_path, capsys, user_inputs):
    import json

    import bitscout
    from bitscout.cli.main import main

    model, data, space = user_inputs
    out = tmp_path / "run"
    result = bitscout.search(model, data, space, strategy="bruteforce", out=out, quiet=True,
                             metrics={"r2": _agreement, "cost": (lambda m, d: 1.0, "minimize")},
                             constraints=["r2 >= 0.9"])  # fmt: skip
    trials = result.trials
    assert trials["r2"].tolist() == trials["accuracy"].tolist()  # the user's own definition
    feasible = trials[trials["r2"] >= 0.9]
    assert 0 < len(feasible) < len(trials)  # the constraint decides something
    assert result.best is not None and result.best.metrics["r2"] == feasible["r2"].max()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["user_metrics"] == {"r2": {"direction": "maximize", "unit": ""},
                                       "cost": {"direction": "minimize", "unit": ""}}  # fmt: skip
    assert summary["objective"]["constraints"] == ["r2 >= 0.9"]
    assert (out / "report.md").is_file()
    loaded = bitscout.SearchResult.load(out)
    assert loaded.best is not None and loaded.best.metrics["r2"] == result.best.metrics["r2"]
    assert main(["report", str(out)]) == 0
    strict = 0.5 * float(trials["r2"].max()) + 0.5 * 0.9
    assert main(["report", str(out), "--constraint", f"r2 >= {strict}", "--name", "strict"]) == 0
    assert main(["report", str(out), "--objective", "cost=1.0,r2=1.0", "--name", "mix"]) == 0
    capsys.readouterr()
    assert (out / "strict" / "report.md").is_file() and (out / "mix" / "report.md").is_file()


def test_recorded_metrics_keep_their_direction_and_unit():
    from bitscout.evaluate.metrics import from_records, user_metric, user_records

    metrics = [user_metric("r2", _agreement), user_metric("ms", _agreement, direction="minimize",
                                                          unit="ms")]  # fmt: skip
    records = user_records([*metrics, get_metric("accuracy")])  # built-ins are not recorded
    assert records == {"r2": {"direction": "maximize", "unit": ""},
                       "ms": {"direction": "minimize", "unit": "ms"}}  # fmt: skip
    back = from_records(records)
    assert {n: (m.direction, m.unit, m.kind) for n, m in back.items()} == {
        "r2": ("maximize", "", "model"), "ms": ("minimize", "ms", "model")}  # fmt: skip
    with pytest.raises(ValueError, match="read back from a run: pass its function"):
        back["r2"].compute(_ctx("jsc-tiny"))
    with pytest.raises(ConfigError, match=r"user_metrics\.r2: needs a direction"):
        from_records({"r2": {"direction": "up"}})
