"""`overflow_rate`: the worst tensor's share of values saturated or wrapped, counted by hand
with numpy on a tiny model (rounded codes outside the format's codes, the accumulator's casts
in hls4ml's order), equal on the fast and the plain path, usable as a search's constraint."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import bitscout
from bitscout.evaluate.audit import Audit
from bitscout.evaluate.evaluator import Evaluator
from bitscout.evaluate.overflow import Probe, count, out_of_range, rate, worst
from bitscout.quant import Integer, quantize_model
from bitscout.quant.apply import QuantPlan
from bitscout.quant.space import SearchSpace
from bitscout.zoo.data import load_dataset
from bitscout.zoo.models import build_model

WIDTHS = (1, 2, 3, 4, 8)


def _codes(v: np.ndarray, rounding: str) -> np.ndarray:
    """The code each scaled value rounds to, with numpy's own rounding functions."""
    if rounding == "half_even":
        return np.round(v)  # numpy rounds ties to even
    if rounding == "half_up":
        return np.floor(v + 0.5)
    return np.floor(v)


def _overflows(x: np.ndarray, width: int, frac: int, rounding: str) -> np.ndarray:
    k = _codes(x.astype(np.float64) * 2.0**frac, rounding)
    return (k < -(2 ** (width - 1))) | (k > 2 ** (width - 1) - 1)


@pytest.mark.parametrize(
    ("width", "frac", "rounding", "overflow"),
    [
        (w, f, r, o)
        for w in WIDTHS
        for f in (0, 2, -1)
        for r in ("half_even", "half_up", "floor")
        for o in ("saturate", "wrap")
    ],
)
def test_an_integer_overflows_where_its_rounded_code_leaves_the_codes(width, frac, rounding,
                                                                      overflow):  # fmt: skip
    fmt = Integer(width, frac, rounding=rounding, overflow=overflow)
    step = 2.0**-frac
    ends = np.array([-(2 ** (width - 1)), 2 ** (width - 1) - 1], dtype=np.float64)
    # every tie and neighbour around both ends, and random values over four times the range
    near = (ends[:, None] + np.arange(-2, 2.25, 0.25)[None, :]).ravel() * step
    rng = np.random.default_rng(width * 31 + frac)
    x = np.concatenate([near, rng.uniform(-4, 4, 500) * 2.0 ** (width - 1) * step])
    got = out_of_range(torch.tensor(x, dtype=torch.float32), fmt).numpy()
    want = _overflows(x.astype(np.float32), width, frac, rounding)
    assert (got == want).all()
    assert got.any() and not got.all()
    # where nothing overflows the format gives the rounded code itself, saturating or not
    q = fmt.quantize_values(torch.tensor(x, dtype=torch.float64)).numpy()
    inside = ~want
    assert np.array_equal(q[inside], _codes(x[inside] * 2.0**frac, rounding) * step)
    assert not np.array_equal(q[want], _codes(x[want] * 2.0**frac, rounding) * step)


def _tiny() -> tuple[nn.Sequential, np.ndarray, np.ndarray]:
    gen = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 2)
    x = np.random.default_rng(6).normal(0, 2.5, (300, 4)).astype(np.float32)
    return model, x, (x[:, 0] > 0).astype(np.int64)


TINY_TABLES = {
    "default": {"name": ["NA"]},
    "0": {"name": ["integer"], "data_in_width": [3, 6], "data_in_frac_width": [1],
          "weight_width": [3, 8], "weight_frac_width": [1], "bias_width": [4],
          "bias_frac_width": [2]},
    "2": {"name": ["integer"], "data_in_width": [4, 8], "data_in_frac_width": [1],
          "weight_width": [3, 6], "weight_frac_width": [1], "bias_width": [3],
          "bias_frac_width": [0], "accum_width": [5, 7], "accum_frac_width": [2],
          "result_width": [4, 6], "result_frac_width": [1], "overflow": ["saturate", "wrap"]},
}  # fmt: skip


def _cast(v: float, width: int, frac: int, wrap: bool) -> tuple[float, bool]:
    """hls4ml's cast of v to ap_fixed<width, width - frac>, rounding half to even, and
    whether it overflowed."""
    k = float(np.round(v * 2.0**frac))
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    over = not lo <= k <= hi
    if over:
        k = (k - lo) % 2**width + lo if wrap else min(max(k, lo), hi)
    return k / 2.0**frac, over


def _reference(model: nn.Sequential, x: np.ndarray, cfg: dict) -> dict:
    """Every tensor's (overflowed, values) of the tiny model, counted value by value."""
    found: dict = {}

    def tally(key, over, n):
        o, m = found.get(key, (0, 0))
        found[key] = (o + int(over), m + n)

    h = x.astype(np.float64)
    for path, layer in (("0", model[0]), ("2", model[2])):
        c = cfg[path]
        wrap = c.get("overflow") == "wrap"
        w = layer.weight.detach().double().numpy()
        b = layer.bias.detach().double().numpy()
        fields = (("data_in", h), ("weight", w), ("bias", b))
        q = {}
        for name, v in fields:
            width, frac = c[f"{name}_width"], c[f"{name}_frac_width"]
            cast = [_cast(val, width, frac, wrap) for val in v.ravel()]
            q[name] = np.array([c for c, _ in cast]).reshape(v.shape)
            tally((path, name), sum(o for _, o in cast), v.size)
        out = np.zeros((len(h), len(b)))
        for n, o in itertools.product(range(len(h)), range(len(b))):
            if "accum_width" not in c:
                out[n, o] = q["data_in"][n] @ q["weight"][o] + q["bias"][o]
                continue
            aw, af = c["accum_width"], c["accum_frac_width"]
            total, hit = _cast(q["bias"][o], aw, af, wrap)
            for j in range(w.shape[1]):
                product, over = _cast(q["data_in"][n, j] * q["weight"][o, j], aw, af, wrap)
                total, summed = _cast(total + product, aw, af, wrap)
                hit = hit or over or summed
            tally((path, "accum"), hit, 1)
            out[n, o] = total
        if "result_width" in c:
            cast = [_cast(v, c["result_width"], c["result_frac_width"], wrap) for v in out.ravel()]
            tally((path, "result"), sum(o for _, o in cast), out.size)
            out = np.array([c for c, _ in cast]).reshape(out.shape)
        h = np.maximum(out, 0) if path == "0" else out
    return found


def _configs(space: SearchSpace) -> list[dict]:
    return [space.config(i) for i in range(space.size)]


def _layer_tables(space: SearchSpace, config) -> dict:
    """Each layer's table of one candidate, its choices resolved."""
    return {layer.key: dict(layer.table_for(space.values_of(layer, config)))
            for layer in space.layers}  # fmt: skip


def test_the_rate_is_the_hand_count_on_both_paths():
    model, x, y = _tiny()
    space = SearchSpace(model, "name", TINY_TABLES)
    evaluator = Evaluator(model, space, (x, y), ["accuracy", "overflow_rate"], audit=Audit(1.0))
    assert evaluator.audit.engine == "fast"
    configs = _configs(space)
    fast = [m["overflow_rate"] for m, _ in evaluator.evaluate_many(configs)]
    assert evaluator.audit.matched == len(configs)  # every candidate re-derived, equal
    plain = [evaluator.evaluate_plan(evaluator.plan(c))["overflow_rate"] for c in configs]
    want = [rate(_reference(model, x, _layer_tables(space, c))) for c in configs]
    assert fast == plain == want
    assert len(set(want)) > 4 and min(want) > 0 and max(want) < 1


def test_the_probe_names_the_worst_tensor():
    model, x, _ = _tiny()
    space = SearchSpace(model, "name", TINY_TABLES)
    config = space.config(0)
    evaluator = Evaluator(model, space, (x, (x[:, 0] > 0).astype(np.int64)), ["overflow_rate"])
    candidate = quantize_model(model, QuantPlan("name", evaluator.plan(config)))
    with Probe().attached(candidate) as probe:
        candidate(torch.from_numpy(x))
    want = _reference(model, x, _layer_tables(space, config))
    assert probe.tally == want
    assert worst(probe.tally) == max(want, key=lambda k: want[k][0] / want[k][1])
    assert not candidate._forward_pre_hooks and not candidate[0]._forward_pre_hooks
    assert evaluator.evaluate(config)[0]["overflow_rate"] == rate(want)


def test_float_and_wide_candidates_overflow_nowhere():
    model, x, y = _tiny()
    space = SearchSpace(model, "name", {"default": {"name": ["NA", "integer"],
                        "data_in_width": [24], "weight_width": [24], "bias_width": [24]}})  # fmt: skip
    evaluator = Evaluator(model, space, (x, y), ["overflow_rate"])
    assert [m["overflow_rate"] for m, _ in evaluator.evaluate_many(_configs(space))] == [0.0] * 4
    assert evaluator.baseline() == {"overflow_rate": 0.0}


def _mlp_tables() -> dict:
    layer = {"name": ["integer"], "data_in_width": [2, 4, 8], "weight_width": [2, 8],
             "bias_width": [8]}  # fmt: skip
    return {"default": {"name": ["NA"]}, "seq_blocks_0": layer, "seq_blocks_2": layer}


def test_fast_and_plain_paths_agree_on_stacked_candidates():
    torch.manual_seed(2)
    model = build_model("mlp").eval()
    data = load_dataset("digits", seed=3)
    space = SearchSpace(model, "name", _mlp_tables())
    evaluator = Evaluator(model, space, (data.x_val, data.y_val), ["accuracy", "overflow_rate"],
                          audit=Audit(0.0))  # fmt: skip
    configs = _configs(space)
    random.Random(0).shuffle(configs[: len(configs) // 2])  # consecutive ones stack, these not
    fast = [m["overflow_rate"] for m, _ in evaluator.evaluate_many(configs, cache=False)]
    plain = [evaluator.evaluate_plan(evaluator.plan(c))["overflow_rate"] for c in configs]
    assert fast == plain and len(set(fast)) > 3


def test_a_search_constrained_on_overflow(tmp_path):
    torch.manual_seed(2)
    model = build_model("mlp").eval()
    data = load_dataset("digits", seed=3)
    result = bitscout.search(model, (data.x_val, data.y_val),
                             {"seed": {k: {"config": v} for k, v in _mlp_tables().items()}},
                             objective=["accuracy"], constraints=["overflow_rate <= 0.001"],
                             strategy="bruteforce", out=tmp_path / "run", quiet=True)  # fmt: skip
    trials = result.trials
    assert len(trials) == 36
    feasible = trials["state"] == "complete"
    assert (feasible == (trials["overflow_rate"] <= 0.001)).all()
    assert 0 < feasible.sum() < len(trials)
    assert result.best is not None and result.best.metrics["overflow_rate"] <= 0.001
    csv = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert np.allclose(csv["overflow_rate"], trials["overflow_rate"])


@pytest.mark.parametrize("fmt", [Integer(4, 1), Integer(1, 0), Integer(30, 3, rounding="floor"),
                                 Integer(6, 2, overflow="wrap")])  # fmt: skip
def test_the_count_is_the_mask_summed_per_interleaved_candidate(fmt):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(60, 5, generator=gen) * 2.0 ** (fmt.width - fmt.frac_width)
    x[7, 2] = float("nan")  # NaN is no value of the format's range, and not counted
    mask = out_of_range(x, fmt)
    by_candidate = [int(mask[i::3].sum()) for i in range(3)]  # row n * 3 + i: candidate i
    assert count(x, fmt, 3).tolist() == by_candidate and sum(by_candidate) > 0
    assert count(x[:7], fmt).tolist() == [int(mask[:7].sum())]  # no NaN: the fast sum
    assert count(x * 0, fmt).tolist() == [0]
