"""Formats built in Python are checked as the TOML path checks them: every field and every
rule across fields, with the same message."""

from __future__ import annotations

import pytest
import torch

from bitscout.errors import ConfigError
from bitscout.quant import FORMATS, Log, MinifloatDenorm, MinifloatIEEE, MXInt, NumberFormat
from bitscout.quant.plan import parse_plan

# Values at and around every limit of every field (width 1..32, 2..9, 8..8, exponent width
# 1..8, 2..5, bias -256..256, frac width -64..64, block size 1..4096), and wrong types.
NUMBERS = (-257, -256, -65, -64, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 23, 24, 25, 32, 33, 64,
           65, 256, 257, 4096, 4097)  # fmt: skip
OTHERS = (True, False, 8.0, "8", "NA", "half_up", "wrap", "bogus", [8])
# A valid value of every field a format requires, for the fields not under test.
VALID = {"width": 8, "exponent_width": 4}


def base(cls: type[NumberFormat]) -> dict[str, object]:
    return {f.suffix: VALID[f.suffix] for f in cls.FIELDS if f.suffix in VALID}


def direct(cls: type[NumberFormat], values: dict[str, object]) -> object:
    try:
        return cls(**values)
    except ConfigError as err:
        return (err.key, err.rule)


def through_toml(cls: type[NumberFormat], values: dict[str, object]) -> object:
    """The same values as a `[passes.quantize]` table quantizing the weight; the error keyed
    as direct construction keys it (the field's suffix)."""
    layer = {f.suffix for f in cls.FIELDS if f.layer}
    table = {"name": cls.name, **{k if k in layer else f"weight_{k}": v for k, v in values.items()}}
    try:
        quant = parse_plan({"default": {"config": table}}).layers["default"]
    except ConfigError as err:
        field = err.key.removeprefix("passes.quantize.default.config.")
        return (field if field in layer else field.removeprefix("weight_"), err.rule)
    return quant.weight if quant is not None else None


CASES = [
    (name, f.suffix, value)
    for name in FORMATS.names()
    for f in FORMATS.get(name).FIELDS
    for value in (*NUMBERS, *OTHERS)
]


@pytest.mark.parametrize(("name", "field", "value"), CASES)
def test_construction_and_toml_accept_and_refuse_alike(name, field, value):
    cls = FORMATS.get(name)
    values = {**base(cls), field: value}
    made, parsed = direct(cls, values), through_toml(cls, values)
    assert made == parsed
    if value == "NA":  # None is Python's "NA"
        assert direct(cls, {**values, field: None}) == made


def test_parity_covers_acceptance_and_refusal_of_every_field():
    """The parity cases are not vacuous: every field has accepted and refused values."""
    for name in FORMATS.names():
        cls = FORMATS.get(name)
        for f in cls.FIELDS:
            outcomes = [direct(cls, {**base(cls), f.suffix: v}) for v in (*NUMBERS, *OTHERS)]
            assert any(isinstance(o, NumberFormat) for o in outcomes), (name, f.suffix)
            assert any(isinstance(o, tuple) for o in outcomes), (name, f.suffix)


@pytest.mark.parametrize(
    ("build", "key", "rule"),
    [
        (lambda: MinifloatIEEE(4, 5), "exponent_width", "mantissa bits outside 1..23"),
        (lambda: MinifloatDenorm(3, 5), "exponent_width", "mantissa bits outside 1..23"),
        (lambda: Log(0), "width", "must be an integer in 2..9"),
        (lambda: MXInt(0), "width", "must be an integer in 8..8"),
        (lambda: MXInt(8, block_size=0), "block_size", "must be an integer in 1..4096"),
    ],
)
def test_invalid_formats_are_refused_at_construction(build, key, rule):
    """Each quantized nonsense before (1.5 -> 131072.0, 458752.0, ±1.189, the input itself,
    or a ZeroDivisionError)."""
    with pytest.raises(ConfigError) as err:
        build()
    assert err.value.key == key
    assert rule in err.value.rule


def test_valid_formats_still_quantize():
    x = torch.tensor([1.5, -0.3])
    assert MinifloatIEEE(8, 4).quantize_values(x).tolist() == pytest.approx([1.5, -0.3125])
    assert MXInt(8, block_size=2).quantize_values(torch.tensor([1.0, 0.5])).tolist() == [1.0, 0.5]
