"""Accumulator and result types: bitscout's layers against an exact rational emulation of
hls4ml's dense layer written here (every ap_fixed cast on Fractions), and the sizing of the
exact accumulator against enumeration."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from bitscout.errors import ConfigError
from bitscout.quant import Integer, quantize_model
from bitscout.quant.apply import parse_layer_config
from bitscout.quant.datapath import Fixed, exact_accum, fan_in


def ap_cast(value: Fraction, width: int, frac: int, rounding: str, overflow: str) -> Fraction:
    """ap_fixed<width, width - frac, Q, O>(value): AP_RND_CONV, AP_RND or AP_TRN, then AP_SAT
    or AP_WRAP, on exact rationals."""
    scaled = value * 2**frac
    low = math.floor(scaled)
    rest = scaled - low
    if rounding == "floor":
        k = low
    elif rounding == "half_up":
        k = low + (rest >= Fraction(1, 2))
    else:
        k = low + (rest > Fraction(1, 2) or (rest == Fraction(1, 2) and low % 2 == 1))
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    k = min(max(k, lo), hi) if overflow == "saturate" else (k - lo) % 2**width + lo
    return Fraction(k, 2**frac)


def dense_reference(x, weight, bias, accum, result, rounding, overflow):
    """hls4ml's `dense_latency` for one row: products and bias cast to accum_t, summed in
    input order with a cast after each addition, the sum cast to res_t."""
    out = []
    for o, row in enumerate(weight):

        def cast(v, fmt):
            return v if fmt is None else ap_cast(v, *fmt, rounding, overflow)

        acc = cast(Fraction(bias[o]), accum)
        for xi, wi in zip(x, row, strict=True):
            acc = cast(acc + cast(Fraction(xi) * Fraction(wi), accum), accum)
        out.append(cast(acc, result))
    return out


def _layer(seed: int, n_in: int = 7, n_out: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, n_out))
    with torch.no_grad():
        model[0].weight.normal_(0, 1.5)
        model[0].bias.normal_(0, 2)
    return model


CASES = [
    # (accum width, accum frac, result width, result frac, rounding, overflow)
    (12, 6, None, None, "half_even", "saturate"),  # products rounded: frac 6 < 4 + 3
    (9, 7, None, None, "half_even", "saturate"),  # partial sums saturate
    (9, 7, None, None, "floor", "wrap"),
    (10, 5, 6, 2, "half_up", "saturate"),
    (10, 5, 6, 2, "half_up", "wrap"),
    (16, 7, 5, 1, "floor", "saturate"),
    (None, None, 7, 3, "half_even", "wrap"),  # only the result cast
    (6, 2, None, None, "half_even", "wrap"),
]


@pytest.mark.parametrize("case", CASES)
def test_linear_equals_the_rational_dense_reference(case):
    acc_w, acc_f, res_w, res_f, rounding, overflow = case
    cfg = {"name": "integer", "data_in_width": 8, "data_in_frac_width": 4, "weight_width": 5,
           "weight_frac_width": 3, "bias_width": 6, "bias_frac_width": 2,
           "rounding": rounding, "overflow": overflow}  # fmt: skip
    if acc_w is not None:
        cfg.update(accum_width=acc_w, accum_frac_width=acc_f)
    if res_w is not None:
        cfg.update(result_width=res_w, result_frac_width=res_f)
    model = _layer(0)
    q = quantize_model(model, {"by": "name", "0": {"config": cfg}})
    x = torch.randn(64, 7) * 3
    got = q(x)
    quant = q[0].quant
    fmt = lambda f: None if f is None else (f.width, f.frac_width)  # noqa: E731
    xs = [[ap_cast(Fraction(float(v)), 8, 4, rounding, overflow) for v in row] for row in x]
    ws = [[ap_cast(Fraction(float(v)), 5, 3, rounding, overflow) for v in row]
          for row in model[0].weight.detach()]  # fmt: skip
    bs = [ap_cast(Fraction(float(v)), 6, 2, rounding, overflow) for v in model[0].bias.detach()]
    saturated = 0
    for i, row in enumerate(xs):
        want = dense_reference(row, ws, bs, fmt(quant.accum), fmt(quant.result), rounding, overflow)
        assert [Fraction(float(v)) for v in got[i]] == want, i
        saturated += any(abs(v) >= 2 ** (acc_w - acc_f - 1) - 1 for v in want) if acc_w else 0
    if case[:2] == (9, 7):
        assert saturated > 0  # the case really exercises overflow inside the sum


def test_the_exact_accumulator_changes_nothing():
    model = _layer(1, n_in=16, n_out=5)
    base = {"name": "integer", "data_in_width": 8, "data_in_frac_width": 5, "weight_width": 6,
            "weight_frac_width": 4, "bias_width": 8, "bias_frac_width": 6}  # fmt: skip
    din, w, b = (Integer(8, 5), Integer(6, 4), Integer(8, 6))
    exact = exact_accum(din, w, b, 16)
    plain = quantize_model(model, {"0": {"config": base}})
    sized = quantize_model(model, {"0": {"config": {
        **base, "accum_width": exact.width, "accum_frac_width": exact.frac,
        "result_width": exact.width, "overflow": "saturate"}}})  # fmt: skip
    x = torch.randn(500, 16) * 100  # saturates every input to the extremes of its format
    assert torch.equal(plain(x), sized(x))
    with torch.no_grad():  # the worst case: every code at the end that maximizes the sum
        model[0].weight.fill_(-100.0)
        model[0].bias.fill_(100.0)
    plain = quantize_model(model, {"0": {"config": base}})
    sized = quantize_model(model, {"0": {"config": {
        **base, "accum_width": exact.width, "accum_frac_width": exact.frac}}})  # fmt: skip
    narrower = quantize_model(model, {"0": {"config": {
        **base, "accum_width": exact.width - 1, "accum_frac_width": exact.frac}}})  # fmt: skip
    worst = torch.full((1, 16), -100.0)
    want = 16 * 4 * 2 + 127 / 64  # 16 products of -4 * -2, the largest bias
    assert plain(worst)[0, 0].item() == want == sized(worst)[0, 0].item()
    assert narrower(worst)[0, 0].item() < want  # one bit fewer saturates


@pytest.mark.parametrize(
    ("din", "w", "b", "n"),
    [
        ((8, 4), (4, 2), (8, 4), 16),
        ((3, 5), (2, -1), None, 5),
        ((1, 0), (1, 0), (1, 3), 1),
        ((6, -2), (7, 9), (5, 0), 64),
        ((9, 4), (8, 3), (9, 8), 300),
    ],
)
def test_exact_accumulator_is_the_narrowest_that_holds_every_sum(din, w, b, n):
    fx, fw = Integer(*din), Integer(*w)
    fb = None if b is None else Integer(*b)
    got = exact_accum(fx, fw, fb, n)
    frac = max(din[1] + w[1], b[1] if b else -999)
    assert got.frac == frac
    # enumerate every product of codes; n of the extreme ones plus the extreme bias
    products = [x * y for x in range(fx.k_min, fx.k_max + 1) for y in range(fw.k_min, fw.k_max + 1)]
    scale = Fraction(2**frac, 2 ** (din[1] + w[1]))
    bias = [0] if fb is None else [fb.k_min * 2 ** (frac - b[1]), fb.k_max * 2 ** (frac - b[1])]
    lo, hi = n * min(products) * scale + min(bias), n * max(products) * scale + max(bias)
    fits = lambda width: -(2 ** (width - 1)) <= lo and hi <= 2 ** (width - 1) - 1  # noqa: E731
    assert fits(got.width) and not fits(got.width - 1)


def test_the_seed_grids_widest_corner_needs_36_bits():
    # 16 products of at most 2**15 * 2**15 codes of 2**-16, plus a bias of (2**15 - 1) codes of
    # 2**-8 = (2**15 - 1) * 2**8 codes of 2**-16: 2**34 + 2**23 - 2**8 < 2**35
    got = exact_accum(Integer(16, 8), Integer(16, 8), Integer(16, 8), 16)
    assert (got.width, got.frac, got.integer) == (36, 16, 20)


def test_fan_in_of_each_layer_type():
    assert fan_in(nn.Linear(12, 3)) == 12
    assert fan_in(nn.Conv1d(4, 8, 3)) == 12
    assert fan_in(nn.Conv2d(6, 8, (3, 2), groups=2)) == 18


def test_frac_widths_default_to_the_exact_grid():
    cfg = {"name": "integer", "data_in_width": 8, "data_in_frac_width": 3, "weight_width": 4,
           "weight_frac_width": 2, "bias_width": 8, "bias_frac_width": 7, "accum_width": 20,
           "result_width": 10}  # fmt: skip
    q = parse_layer_config(cfg, "k")
    assert (q.accum.frac_width, q.result.frac_width) == (7, 7)  # bias frac 7 > 3 + 2
    na = parse_layer_config({**cfg, "result_frac_width": "NA"}, "k")
    assert na.result.frac_width == 5  # MASE's "NA": width // 2


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"name": "integer", "weight_width": 4, "accum_width": 12}, "k.accum_frac_width"),
        ({"name": "integer", "accum_frac_width": 3}, "k.accum_frac_width"),
        (
            {"name": "integer", "data_in_width": 4, "weight_width": 4, "accum_width": 40},
            "k.accum_width",
        ),
    ],
)
def test_bad_datapath_fields(cfg, key):
    with pytest.raises(ConfigError) as err:
        parse_layer_config(cfg, "k")
    assert err.value.key == key


def test_a_convolution_refuses_a_fixed_accumulator():
    model = nn.Sequential(nn.Conv1d(2, 3, 3))
    cfg = {"name": "integer", "data_in_width": 8, "weight_width": 4, "accum_width": 12}
    with pytest.raises(ConfigError, match="linear layers only"):
        quantize_model(model, {"by": "type", "conv1d": {"config": cfg}})
    q = quantize_model(model, {"by": "type", "conv1d": {"config": {
        "name": "integer", "data_in_width": 8, "weight_width": 4, "result_width": 6,
        "result_frac_width": 2}}})  # fmt: skip
    out = q(torch.randn(5, 2, 9) * 4)
    assert torch.equal(out, torch.clamp(torch.round(out * 4), -32, 31) / 4)  # on the grid
    assert Fixed(10, 3).integer == 7
