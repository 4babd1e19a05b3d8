"""Every number format against an independent reference: ml_dtypes and torchao where they
define the same format, else a NumPy reference written here (the value set enumerated and the
nearest value taken, or the format's definition computed block by block in plain Python)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from bitscout.errors import ConfigError
from bitscout.quant import (
    FORMATS,
    MXFP,
    Binary,
    BlockFP,
    MinifloatDenorm,
    MinifloatIEEE,
    MXInt,
    Ternary,
    quantize,
)

RNG = np.random.default_rng(0)


def _wide_values(n: int = 40_000) -> np.ndarray:
    """float32 values over many binades, both signs, with zeros and exact powers of two."""
    x = RNG.normal(size=n) * np.exp2(RNG.integers(-24, 24, n))
    return np.concatenate([x, [0.0, -0.0, 1.0, -2.0, 0.5, 1.99, 3.0]]).astype(np.float32)


def _ours(fmt, x: np.ndarray) -> np.ndarray:
    return fmt.quantize_values(torch.from_numpy(x)).numpy()


# --- minifloat_ieee --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "exp", "dtype", "limit"),
    [
        # e4m3fn's largest value is 448 (480's code is its NaN) and e5m2 has infinities: the
        # two agree with bitscout's MASE-style range below the midpoint to the next value
        (8, 4, "float8_e4m3fn", 464.0),
        (8, 5, "float8_e5m2", 61440.0),
        (6, 2, "float6_e2m3fn", None),  # no infinities or NaNs: the same format everywhere
        (6, 3, "float6_e3m2fn", None),
        (4, 2, "float4_e2m1fn", None),
    ],
)
def test_minifloat_ieee_equals_ml_dtypes(width, exp, dtype, limit):
    import ml_dtypes

    x = _wide_values()
    if limit is not None:
        x = x[np.abs(x) < limit]
    want = x.astype(getattr(ml_dtypes, dtype)).astype(np.float32)
    np.testing.assert_array_equal(_ours(MinifloatIEEE(width, exp), x), want)


def _ieee_values(width: int, exp: int, bias: int) -> tuple[np.ndarray, np.ndarray]:
    """Every non-negative value of the format and its code (exponent << M | mantissa)."""
    m = width - 1 - exp
    values, codes = [], []
    for e_code, mant in itertools.product(range(2**exp), range(2**m)):
        if e_code == 0:
            v = 2.0 ** (1 - bias) * mant / 2**m
        else:
            v = 2.0 ** (e_code - bias) * (1 + mant / 2**m)
        values.append(v)
        codes.append(e_code << m | mant)
    return np.array(values), np.array(codes)


def _nearest(x: np.ndarray, values: np.ndarray, codes: np.ndarray | None) -> np.ndarray:
    """The nearest of `values` to |x| (ties to the even code), with x's sign; saturates."""
    a = np.abs(x.astype(np.float64))
    dist = np.abs(a[:, None] - values[None, :])
    best = dist.min(axis=1, keepdims=True)
    tied = dist == best
    if codes is None:
        pick = np.argmax(tied, axis=1)
    else:
        pick = np.argmax(tied & (codes[None, :] % 2 == 0), axis=1)
        pick = np.where(tied.sum(1) > 1, pick, np.argmax(tied, axis=1))
    return np.copysign(values[pick], x)


@pytest.mark.parametrize(
    ("width", "exp", "bias"), [(5, 2, 1), (7, 3, 5), (8, 4, 3), (6, 4, 7), (9, 3, 2)]
)
def test_minifloat_ieee_equals_the_enumerated_value_set(width, exp, bias):
    values, codes = _ieee_values(width, exp, bias)
    top = values.max()
    x = np.concatenate(
        [_wide_values(4000) * top / 8, values[::3] * 1.0001, (values[:-1] + values[1:]) / 2]
    ).astype(np.float32)  # ties too
    fmt = FORMATS.get("minifloat_ieee").parse({"width": width, "exponent_width": exp,
                                               "exponent_bias": bias})  # fmt: skip
    np.testing.assert_array_equal(_ours(fmt, x), _nearest(x, values, codes).astype(np.float32))


def test_minifloat_ieee_rounds_correctly_where_mase_does_not():
    fmt = MinifloatIEEE(5, 2)  # 2 mantissa bits: 1.75 and 2.0 are neighbours
    assert _ours(fmt, np.array([1.99, 1.87, -1.99], dtype=np.float32)).tolist() == [2.0, 1.75, -2.0]
    e5m2 = MinifloatIEEE(8, 5)  # no infinities: the top exponent code holds numbers
    assert e5m2.max_value == 114688.0 and _ours(e5m2, np.array([1e9], np.float32))[0] == 114688.0


# --- minifloat_denorm, log --------------------------------------------------------------------


def _denorm_values(width: int, exp: int, bias: int) -> np.ndarray:
    m = width - 1 - exp
    return np.unique([2.0**e * k / 2**m for e in range(-bias, 2**exp - bias) for k in range(2**m)])


@pytest.mark.parametrize(("width", "exp"), [(8, 4), (6, 3), (5, 2), (7, 2)])
def test_minifloat_denorm_is_the_nearest_of_its_value_set(width, exp):
    bias = 2 ** (exp - 1) - 1
    values = _denorm_values(width, exp, bias)
    x = (_wide_values(6000) * values.max() / 16).astype(np.float32)
    want = _nearest(x, values, None)
    mid = (values[:-1] + values[1:]) / 2
    exact_ties = np.isin(np.abs(x.astype(np.float64)), mid)
    ours = _ours(MinifloatDenorm(width, exp), x)
    np.testing.assert_array_equal(ours[~exact_ties], want[~exact_ties].astype(np.float32))
    assert MinifloatDenorm(8, 4).max_value == 2.0**8 * (1 - 2.0**-3)


@pytest.mark.parametrize(("width", "bias"), [(4, None), (5, 7), (8, 60)])
def test_log_takes_the_nearest_power_of_two_in_the_log_domain(width, bias):
    fmt = FORMATS.get("log").parse({"width": width, "exponent_bias": bias or "NA"})
    b = fmt.exponent_bias
    exps = np.arange(-b, 2 ** (width - 1) - b)
    x = _wide_values(20_000)
    a = np.abs(x.astype(np.float64))
    with np.errstate(divide="ignore"):
        distance = np.abs(np.log2(a)[:, None] - exps[None, :])
    want = np.copysign(np.exp2(exps[np.argmin(distance, axis=1)]), x)
    want[a == 0] = 2.0**-b  # zero is not a value: MASE maps it to +2**-bias
    np.testing.assert_array_equal(_ours(fmt, x), want.astype(np.float32))


# --- block formats ----------------------------------------------------------------------------


def _blocks(x: np.ndarray, size: int):
    """Yield (row, start, block) over blocks of `size` along the last dimension."""
    for r, row in enumerate(x.astype(np.float64)):
        for s in range(0, len(row), size):
            yield r, s, row[s : s + size]


def _ref_block_fp(x: np.ndarray, width: int, exp: int, size: int) -> np.ndarray:
    bias, m = 2 ** (exp - 1) - 1, width - 1
    out = np.zeros_like(x, dtype=np.float64)
    for r, s, block in _blocks(x, size):
        amax = np.abs(block).max()
        e = -bias if amax == 0 else math.frexp(amax)[1]  # the smallest E with amax < 2**E
        e = min(max(e, -bias), 2**exp - 1 - bias)
        step = 2.0 ** (e - m)
        k = np.clip(np.round(block / step), -(2**m - 1), 2**m - 1)
        out[r, s : s + size] = k * step
    return out.astype(np.float32)


@pytest.mark.parametrize(("width", "exp", "size"), [(8, 8, 16), (4, 5, 8), (6, 3, 5)])
def test_block_fp_against_its_definition_block_by_block(width, exp, size):
    x = (RNG.normal(size=(12, 37)) * np.exp2(RNG.integers(-6, 6, (12, 1)))).astype(np.float32)
    x[0, :size] = 0.0  # an all-zero block
    x[1, 0] = 4.0  # an exact power of two as a block's maximum stays exact (MASE: 4 * 31/32)
    fmt = BlockFP(width, exp, block_size=size)
    np.testing.assert_array_equal(_ours(fmt, x), _ref_block_fp(x, width, exp, size))
    assert fmt.bits_for((37,)) == width + exp * math.ceil(37 / size) / 37


TORCHAO_ELEMENTS = {(8, 4): "float8_e4m3fn", (8, 5): "float8_e5m2", (6, 2): "fp6_e2m3",
                    (6, 3): "fp6_e3m2", (4, 2): "float4_e2m1fn_x2"}  # fmt: skip


@pytest.mark.parametrize(("width", "exp"), list(TORCHAO_ELEMENTS))
def test_mxfp_equals_torchao(width, exp):
    from torchao.prototype.mx_formats import constants
    from torchao.prototype.mx_formats.mx_tensor import MXTensor

    name = TORCHAO_ELEMENTS[(width, exp)]
    dtype = getattr(torch, name, None) or getattr(constants, f"DTYPE_{name.upper()}")
    x = torch.randn(48, 256) * torch.exp2(torch.randint(-10, 10, (48, 1)).float())
    x[0, :32] = 0.0
    x[1, :32] = torch.linspace(-1, 1, 32) * 1e-3
    x[1, 0] = 1e4  # the rest of its block underflows against it
    want = MXTensor.to_mx(x, dtype, block_size=32).dequantize(torch.float32)
    assert torch.equal(MXFP(width, exp).quantize_values(x), want)


def test_mxint8_against_the_ocp_definition():
    x = (RNG.normal(size=(9, 70)) * np.exp2(RNG.integers(-5, 5, (9, 1)))).astype(np.float32)
    x[2, 32:64] = 0.0
    want = np.zeros_like(x, dtype=np.float64)
    for r, s, block in _blocks(x, 32):
        amax = np.abs(block).max()
        shared = -127 if amax == 0 else min(max(math.floor(math.log2(amax)), -127), 127)
        scale = 2.0**shared
        want[r, s : s + 32] = np.clip(np.round(block / scale * 64), -127, 127) / 64 * scale
    np.testing.assert_array_equal(_ours(MXInt(), x), want.astype(np.float32))
    assert MXInt().bits == 8.25 and MXFP(4, 2).bits == 4.25


# --- binary, ternary --------------------------------------------------------------------------


def test_binary_as_mase_computes_it():
    x = RNG.normal(size=(6, 10)).astype(np.float32)
    x[0, 0] = 0.0
    bipolar = _ours(Binary(bipolar=True), x)
    np.testing.assert_array_equal(bipolar, np.where(x >= 0, 1.0, -1.0))
    alpha = np.abs(x.astype(np.float64)).mean(axis=1, keepdims=True)
    np.testing.assert_array_equal(_ours(Binary(), x), np.where(x > 0, alpha, 0).astype(np.float32))
    assert Binary().bits_for((6, 10)) == 1 + 32 / 10 and Binary(bipolar=True).bits == 1
    assert Ternary().bits == 2


@pytest.mark.parametrize("scaled", [False, True])
def test_ternary_as_mase_computes_it(scaled):
    x = RNG.normal(size=(5, 3, 4)).astype(np.float32)
    x[4] = 0.0  # a slice with nothing beyond its threshold
    flat = x.reshape(5, -1).astype(np.float64)
    delta = 0.75 * np.abs(flat).mean(axis=1, keepdims=True)
    level = (flat > delta).astype(float) - (flat < -delta).astype(float)
    if scaled:
        beyond = np.abs(flat) > delta
        with np.errstate(invalid="ignore"):
            alpha = np.nan_to_num(
                (np.abs(flat) * beyond).sum(1, keepdims=True) / beyond.sum(1, keepdims=True)
            )
        level = level * alpha
    got = _ours(Ternary(scaling_factor=scaled), x)
    np.testing.assert_array_equal(got, level.reshape(x.shape).astype(np.float32))


# --- every format -----------------------------------------------------------------------------


EXAMPLES = [
    {"name": "integer", "width": 6, "frac_width": 3},
    {"name": "minifloat_ieee", "width": 8, "exponent_width": 4},
    {"name": "minifloat_denorm", "width": 8, "exponent_width": 3},
    {"name": "log", "width": 5},
    {"name": "block_fp", "width": 6, "block_size": 8},
    {"name": "mxint", "width": 8},
    {"name": "mxfp", "width": 6, "exponent_width": 2},
    {"name": "binary", "bipolar": True},
    {"name": "ternary", "scaling_factor": True},
]


@pytest.mark.parametrize("spec", EXAMPLES, ids=lambda s: s["name"])
def test_every_format_is_idempotent_with_a_straight_through_gradient(spec):
    values = {k: v for k, v in spec.items() if k != "name"}
    fmt = FORMATS.get(spec["name"]).parse(values)
    x = torch.randn(7, 40, requires_grad=True)
    q = quantize(x, fmt)
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # the identity, clipped values included
    if spec["name"] not in ("binary", "ternary"):  # their scales are statistics of the input
        assert torch.equal(fmt.quantize_values(q.detach()), q.detach())
    assert fmt == FORMATS.get(spec["name"]).parse(fmt.values())  # what best.toml writes
    assert hash(fmt) == hash(FORMATS.get(spec["name"]).parse(fmt.values()))


@pytest.mark.parametrize(
    ("name", "values", "field"),
    [
        ("minifloat_ieee", {"width": 4, "exponent_width": 3}, "exponent_width"),  # no mantissa
        ("minifloat_ieee", {"width": 8, "exponent_width": 9}, "exponent_width"),
        (
            "minifloat_ieee",
            {"width": 8, "exponent_width": 4, "exponent_bias": -200},
            "exponent_bias",
        ),
        ("mxfp", {"width": 8, "exponent_width": 3}, "exponent_width"),  # not an OCP element
        ("mxint", {"width": 4}, "width"),
        ("log", {"width": 12}, "width"),
        ("binary", {"stochastic": True}, "stochastic"),
        ("block_fp", {"width": 8, "block_size": 0}, "block_size"),
    ],
)
def test_bad_fields_name_the_field(name, values, field):
    with pytest.raises(ConfigError) as err:
        FORMATS.get(name).parse(values)
    assert err.value.key == field


# --- NaN, infinities and the ranges that can be built (issue 20 item 9) ----------------------


def test_log_saturates_infinities_and_keeps_nan():
    fmt = FORMATS.get("log").parse({"width": 5})  # bias 7: 2**-7 .. 2**8
    x = torch.tensor([float("inf"), -float("inf"), 3e38, float("nan"), 0.0])
    got = fmt.quantize_values(x)
    assert got[:3].tolist() == [256.0, -256.0, 256.0]  # were 1.0, -1.0 and 256.0
    assert math.isnan(got[3]) and got[4] == 2.0**-7  # NaN was 0.5


@pytest.mark.parametrize(
    "fmt", [BlockFP(8, block_size=4), MXInt(block_size=4), MXFP(8, 4, block_size=4)]
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_block_holding_nan_or_inf_is_nan_and_the_others_keep_their_scale(fmt, bad):
    x = torch.tensor([[100.0, 3.0, bad, 1.0, 100.0, 3.0, 2.0, 1.0]])
    got = fmt.quantize_values(x)
    assert torch.isnan(got[0, :4]).all()  # 100 became 0.99 before: rescaled by the inf/NaN
    assert torch.equal(got[:, 4:], fmt.quantize_values(x[:, 4:]))


def test_mxfp_propagates_nan_as_torchao_does():
    from torchao.prototype.mx_formats.mx_tensor import MXTensor

    x = torch.randn(4, 64)
    x[1, 40] = float("nan")
    want = MXTensor.to_mx(x, torch.float8_e4m3fn, block_size=32).dequantize(torch.float32)
    got = MXFP(8, 4).quantize_values(x)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.isnan(got[1, 32:]).all() and not torch.isnan(got[1, :32]).any()
    assert torch.equal(got.nan_to_num(), want.nan_to_num())


@pytest.mark.parametrize("name", ["minifloat_ieee", "minifloat_denorm"])
def test_minifloat_widths_are_3_to_31(name):
    cls = FORMATS.get(name)
    for width in (2, 32):
        with pytest.raises(ConfigError) as err:
            cls.parse({"width": width, "exponent_width": 1})
        assert err.value.key == "width" and "3..31" in str(err.value)
    assert cls.parse({"width": 3, "exponent_width": 1}).mantissa == 1
    assert cls.parse({"width": 31, "exponent_width": 7}).mantissa == 23


def test_every_minifloat_width_and_exponent_width_in_range_builds_with_some_bias():
    """What the field ranges promise: each width 3..31 has an exponent width that builds with
    the default bias, and a refused bias names the range that works, quoting the bias given."""
    for width in range(3, 32):
        assert any(
            MinifloatIEEE(width, e).bias == 2 ** (e - 1) - 1
            for e in range(max(1, width - 24), min(7, width - 2) + 1)
        )
    with pytest.raises(ConfigError) as err:
        MinifloatIEEE(16, 8)  # the default bias 127 puts the top binade at 2**128
    assert "128..143" in str(err.value) and str(err.value).endswith("got 127")
    assert MinifloatIEEE(16, 8, 128).emax == 127


def test_log_width_9_needs_a_bias_of_128_to_149():
    log = FORMATS.get("log")
    with pytest.raises(ConfigError) as err:
        log.parse({"width": 9})
    assert err.value.key == "exponent_bias" and "128..149" in str(err.value)
    assert str(err.value).endswith("got 127")  # the default bias; the message said 128
    assert log.parse({"width": 9, "exponent_bias": 128}).emax == 127
    assert log.parse({"width": 9, "exponent_bias": 149}).emin == -149
    for width in range(2, 9):  # the default bias builds below 9
        log.parse({"width": width})


@pytest.mark.parametrize(
    "fmt", [Binary(), Ternary(), Ternary(scaling_factor=True)], ids=["binary", "ternary", "scaled"]
)
def test_a_slice_holding_nan_is_nan_and_the_other_slices_are_unchanged(fmt):
    """A per-slice statistic with a NaN in it: the slice was 0 or its levels silently."""
    x = torch.tensor([[float("nan"), 1.0, -2.0, 0.5], [1.0, -1.0, 2.0, 0.1]])
    got = fmt.quantize_values(x)
    assert torch.isnan(got[0]).all()
    assert torch.equal(got[1:], fmt.quantize_values(x[1:]))


def test_bipolar_binary_keeps_nan():
    got = Binary(bipolar=True).quantize_values(torch.tensor([float("nan"), -0.5, 0.0]))
    assert math.isnan(got[0]) and got[1:].tolist() == [-1.0, 1.0]  # NaN was -1
