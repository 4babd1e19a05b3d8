"""Tests for bitscout.quant.formats: `Integer` and `quantize` against an independent reference.

The reference works in float64 (exact for every float32 input scaled by 2**f, |f| <= 64) and
Python integers, with explicit tie handling and `%` for the two's-complement wrap.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitscout.errors import ConfigError
from bitscout.quant import Integer, quantize

ROUNDINGS = ("half_even", "half_up", "floor")
OVERFLOWS = ("saturate", "wrap")
FRACS = ("none", "zero", "half", "over", "negative")


def frac_for(width: int, kind: str) -> int | None:
    return {"none": None, "zero": 0, "half": width // 2, "over": width + 3, "negative": -2}[kind]


def ref_quantize(x, width: int, frac, rounding: str = "half_even", overflow: str = "saturate"):
    """Independent fixed-point reference; returns float64 values k * 2**-f."""
    f = width // 2 if frac in (None, "NA") else frac
    s = np.asarray(x, dtype=np.float32).astype(np.float64) * 2.0**f  # exact
    lo = np.floor(s)
    rem = s - lo  # exact: fractional part in [0, 1)
    if rounding == "floor":
        k = lo
    elif rounding == "half_up":
        k = np.where(rem >= 0.5, lo + 1, lo)
    else:  # half_even: up above the tie, and at the tie only when lo is odd
        up = (rem > 0.5) | ((rem == 0.5) & (np.fmod(lo, 2) != 0))
        k = np.where(up, lo + 1, lo)
    k_min, k_max, span = -(1 << (width - 1)), (1 << (width - 1)) - 1, 1 << width
    if overflow == "saturate":
        out = [min(max(int(v), k_min), k_max) for v in k.ravel()]
    else:  # two's complement: the residue of k modulo 2**width that lies in [k_min, k_max]
        out = [(int(v) - k_min) % span + k_min for v in k.ravel()]
    return (np.array(out, dtype=np.float64) * 2.0**-f).reshape(s.shape)


def samples(width: int, f: int, seed: int) -> np.ndarray:
    """Grid points, exact ties, near-grid noise, out-of-range and special values (float32).

    Large values stay below 2**24 once scaled (wider cases have their own tests below); those
    just past 2**23 catch `floor(s + 0.5)`, which float32 rounds there.
    """
    rng = np.random.default_rng(seed)
    step = 2.0**-f
    k_min, k_max = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if width <= 8:
        ks = np.arange(k_min - 4, k_max + 5, dtype=np.float64)
    else:
        ks = rng.integers(k_min - 4, k_max + 5, 200).astype(np.float64)
    half_range = 2.0 ** (width - 1) * step
    big = np.array([2, 3.7, 10, 100, 1000, 12345.5]) * half_range
    big = big[big * 2.0**f < 2**22]
    special = np.array([0.0, -0.0, step / 2, -step / 2, step / 4, -step / 4, 1, -1, 0.1, -0.1])
    parts = [
        ks * step,
        (ks + 0.5) * step,
        (ks + rng.uniform(-1, 1, ks.size)) * step,
        rng.uniform(-3, 3, 300) * half_range,
        big,
        -big,
        special,
        np.array([2**23 + 1, 2**23 + 3, -(2**23) - 1, -(2**23) - 3, 2**23 - 0.5]) * step,
    ]
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("frac_kind", FRACS)
@pytest.mark.parametrize("width", range(1, 17))
def test_quantize_matches_reference(width, frac_kind, rounding, overflow):
    frac = frac_for(width, frac_kind)
    fmt = Integer(width, frac, rounding=rounding, overflow=overflow)
    f = fmt.frac_width
    assert f == (width // 2 if frac is None else frac)
    x = samples(width, f, seed=width * 100 + FRACS.index(frac_kind))
    got = quantize(torch.from_numpy(x), fmt)
    assert got.dtype == torch.float32 and got.shape == x.shape
    want = ref_quantize(x, width, frac, rounding, overflow)
    got64 = got.numpy().astype(np.float64)
    bad = np.flatnonzero(got64 != want)
    assert bad.size == 0, f"x={x[bad[:5]]} got={got64[bad[:5]]} want={want[bad[:5]]}"

    # On the grid, inside [k_min, k_max] * step (wrap lands in range too), idempotent.
    k = got64 * 2.0**f
    assert np.array_equal(k, np.round(k))
    assert k.min() >= fmt.k_min and k.max() <= fmt.k_max
    assert torch.equal(quantize(got, fmt), got)
    if overflow == "saturate":
        in_range = (x >= fmt.k_min * fmt.step) & (x <= fmt.k_max * fmt.step)
        assert np.all(np.abs(got64 - x)[in_range] <= fmt.step)  # rounding moves < 1 step
        assert np.all(got64[x > (fmt.k_max + 1) * fmt.step] == fmt.k_max * fmt.step)
        assert np.all(got64[x < (fmt.k_min - 1) * fmt.step] == fmt.k_min * fmt.step)


@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 12, 16, 20, 24])
@pytest.mark.parametrize("frac_kind", ["none", "zero", "over", "negative"])
def test_representable_values_are_fixed_points(width, frac_kind, rounding, overflow):
    fmt = Integer(width, frac_for(width, frac_kind), rounding=rounding, overflow=overflow)
    rng = np.random.default_rng(width)
    ks = np.concatenate([rng.integers(fmt.k_min, fmt.k_max + 1, 500), [fmt.k_min, fmt.k_max, 0]])
    x = torch.from_numpy((ks * fmt.step).astype(np.float32))
    assert np.array_equal(x.numpy().astype(np.float64), ks * fmt.step)  # exact in float32
    assert torch.equal(quantize(x, fmt), x)


@pytest.mark.parametrize("width", range(25, 33))
def test_wide_formats_fixed_points_saturate(width):
    fmt = Integer(width, 0)
    x = torch.tensor([1.0, 3.0, -5.0, 100.0, -(2.0 ** (width - 1)), 2.0**23 + 1])
    assert torch.equal(quantize(x, fmt), x)


@pytest.mark.parametrize(
    ("fmt", "x", "want"),
    [
        (Integer(32, 0, overflow="wrap"), 1.0, 1.0),
        (Integer(32, 0, overflow="wrap"), -5.0, -5.0),
        (Integer(25, 0, overflow="wrap"), 3.0, 3.0),
        (Integer(8, 4, overflow="wrap"), 2.0**27, 0.0),  # k = 2**31 wraps to 0
        (Integer(3, 0, overflow="wrap"), 2.0**25 - 2, -2.0),
        (Integer(8, 19, overflow="wrap"), 3e38, 0.0),  # scaled value overflows float32
    ],
)
def test_wrap_exact_for_wide_formats_and_huge_values(fmt, x, want):
    assert ref_quantize([x], fmt.width, fmt.frac_width, fmt.rounding, fmt.overflow)[0] == want
    assert quantize(torch.tensor([x]), fmt).item() == want


@pytest.mark.parametrize("width", [26, 32])
def test_saturate_stays_in_range_for_wide_formats(width):
    got = quantize(torch.tensor([1e10, -1e10]), Integer(width, 0))
    assert got[0].item() <= 2 ** (width - 1) - 1
    assert got[1].item() == -(2 ** (width - 1))


@pytest.mark.parametrize(("frac", "x"), [(-2, -1e-45), (-64, -1e-30)])
def test_floor_of_tiny_negative_values(frac, x):
    fmt = Integer(8, frac, rounding="floor")
    assert quantize(torch.tensor([x]), fmt).item() == -fmt.step


def test_hls4ml_examples_by_hand():
    x = torch.tensor([2.0, 0.125, -0.125, 0.375, 1.875, -2.125, -2.25, 1.8, -0.1])
    cases = {
        ("half_up", "wrap"): [-2.0, 0.25, 0.0, 0.5, -2.0, -2.0, 1.75, 1.75, 0.0],
        ("half_up", "saturate"): [1.75, 0.25, 0.0, 0.5, 1.75, -2.0, -2.0, 1.75, 0.0],
        ("half_even", "saturate"): [1.75, 0.0, 0.0, 0.5, 1.75, -2.0, -2.0, 1.75, 0.0],
        ("half_even", "wrap"): [-2.0, 0.0, 0.0, 0.5, -2.0, -2.0, 1.75, 1.75, 0.0],
        ("floor", "saturate"): [1.75, 0.0, -0.25, 0.25, 1.75, -2.0, -2.0, 1.75, -0.25],
        ("floor", "wrap"): [-2.0, 0.0, -0.25, 0.25, 1.75, 1.75, 1.75, 1.75, -0.25],
    }
    for (rounding, overflow), want in cases.items():
        got = quantize(x, Integer(4, 2, rounding=rounding, overflow=overflow))
        assert got.tolist() == want, (rounding, overflow)


def test_half_even_ties():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    assert quantize(x, Integer(8, 0)).tolist() == [0.0, 2.0, 2.0, 0.0, -2.0, -2.0]
    assert quantize(x, Integer(8, 0, rounding="half_up")).tolist() == [1, 2, 3, 0, -1, -2]
    assert quantize(x, Integer(8, 0, rounding="floor")).tolist() == [0, 1, 2, -1, -2, -3]


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("overflow", OVERFLOWS)
def test_width_one_has_two_values(rounding, overflow):
    fmt = Integer(1, 3, rounding=rounding, overflow=overflow)
    assert (fmt.k_min, fmt.k_max) == (-1, 0)
    x = torch.linspace(-2, 2, 401)
    assert set(quantize(x, fmt).tolist()) <= {-0.125, 0.0}
    assert set(quantize(x, Integer(1, None, rounding=rounding, overflow=overflow)).tolist()) <= {
        -1.0,
        0.0,
    }


@pytest.mark.parametrize("overflow", OVERFLOWS)
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_gradient_is_identity(rounding, overflow):
    fmt = Integer(4, 2, rounding=rounding, overflow=overflow)
    x = torch.tensor([-100.0, -2.3, -0.125, 0.0, 0.1, 1.9, 7.0, 1e6], requires_grad=True)
    y = quantize(x, fmt)
    assert y.requires_grad
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    x.grad = None
    upstream = torch.arange(8.0) - 3
    (quantize(x, fmt) * upstream).sum().backward()
    assert torch.equal(x.grad, upstream)
    assert torch.equal(y.detach(), quantize(x.detach(), fmt))


def test_none_format_returns_input():
    x = torch.randn(5, requires_grad=True)
    assert quantize(x, None) is x
    assert not quantize(torch.randn(3), Integer(8)).requires_grad


def test_frac_none_is_half_width():
    assert Integer(8, None) == Integer(8, 4)
    assert Integer(8) == Integer(8, 4, rounding="half_even", overflow="saturate")
    assert Integer(7, None).frac_width == 3
    assert Integer(1, None).frac_width == 0
    assert Integer(8, None) != Integer(8, 4, rounding="floor")
    assert hash(Integer(8, None)) == hash(Integer(8, 4))


def test_integer_is_frozen():
    fmt = Integer(8, 4)
    with pytest.raises(AttributeError):
        fmt.width = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"width": 0}, "width"),
        ({"width": 33}, "width"),
        ({"width": -1}, "width"),
        ({"width": 8.5}, "width"),
        ({"width": 8.0}, "width"),
        ({"width": True}, "width"),
        ({"width": "8"}, "width"),
        ({"width": 8, "frac_width": "x"}, "frac_width"),
        ({"width": 8, "frac_width": 1.5}, "frac_width"),
        ({"width": 8, "frac_width": False}, "frac_width"),
        ({"width": 8, "rounding": "nearest"}, "rounding"),
        ({"width": 8, "overflow": "clip"}, "overflow"),
    ],
)
def test_construction_errors(kwargs, field):
    with pytest.raises(ConfigError) as info:
        Integer(**kwargs)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert field in message
    bad = kwargs[field]
    assert repr(bad) in message


def test_width_bounds_accepted():
    assert Integer(1).k_min == -1 and Integer(1).k_max == 0
    assert Integer(32, 0).k_max == 2**31 - 1 and Integer(32, 0).k_min == -(2**31)
    assert Integer(8, -2).step == 4.0
