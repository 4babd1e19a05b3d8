"""Floating-point formats of a few bits: IEEE-style minifloats (with MASE's range: no
infinities, so every exponent code holds normal numbers), MASE's minifloats without an
implicit leading bit, and signed powers of two.

Every value is computed in float64, where scaling by a power of two and rounding to an
integer are exact for float32 inputs, so the results are correctly rounded.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from bitscout.errors import ConfigError
from bitscout.quant.formats import (
    Field,
    NumberFormat,
    int_in,
    int_or_na,
    register_format,
    width_field,
)

MAX_MANTISSA = 23  # float32's: wider mantissas would not survive the way back to float32
FLOAT32_MIN_EXP, FLOAT32_MAX_EXP = -149, 127  # smallest subnormal, largest binade


def exponent_of(v: torch.Tensor) -> torch.Tensor:
    """floor(log2(v)) for v > 0, exactly (frexp reads the exponent bits); 0 for v == 0."""
    return (torch.frexp(v).exponent - 1).to(v.dtype)


def float_grid(v: torch.Tensor, mantissa: int, min_exp: int, max_value: float) -> torch.Tensor:
    """|v| (float64, >= 0) rounded half to even onto the floating-point grid with `mantissa`
    fraction bits whose smallest normal binade is 2**min_exp (subnormals below it keep that
    binade's spacing), then saturated at `max_value`."""
    e = torch.clamp(exponent_of(v), min=min_exp)
    step = torch.exp2(e - mantissa)
    return torch.clamp(torch.round(v / step) * step, max=max_value)


def _check_range(bias: int, emax: int, mantissa: int) -> None:
    """Keep every value a float32: no binade above float32's, no spacing below its smallest."""
    if emax > FLOAT32_MAX_EXP or 1 - bias - mantissa < FLOAT32_MIN_EXP:
        rule = "puts values outside float32's range (largest binade 2**127, smallest step 2**-149)"
        raise ConfigError("exponent_bias", rule, bias)


@dataclass(frozen=True)
class _Minifloat(NumberFormat):
    FIELDS: ClassVar[tuple[Field, ...]] = (
        width_field(2, 32),
        Field("exponent_width", "an integer in 1..8", "integers in 1..8", int_in(1, 8)),
        int_or_na("exponent_bias", -256, 256),
    )

    width: int
    exponent_width: int
    exponent_bias: int | None = None

    def _resolve(self) -> None:
        if not 1 <= self.mantissa <= MAX_MANTISSA:
            rule = f"leaves width - 1 - exponent_width mantissa bits outside 1..{MAX_MANTISSA}"
            raise ConfigError("exponent_width", f"{rule} (width {self.width})", self.exponent_width)
        if self.exponent_bias is None:
            object.__setattr__(self, "exponent_bias", 2 ** (self.exponent_width - 1) - 1)
        _check_range(self.bias, self.emax, self.mantissa)

    @property
    def mantissa(self) -> int:
        return self.width - 1 - self.exponent_width

    @property
    def bias(self) -> int:
        return self.exponent_bias  # type: ignore[return-value]

    @property
    def emax(self) -> int:
        """The exponent of the largest binade: every exponent code is a normal number."""
        return 2**self.exponent_width - 1 - self.bias


@register_format
@dataclass(frozen=True)
class MinifloatIEEE(_Minifloat):
    """Sign, `exponent_width` exponent bits with `exponent_bias` (default 2**(E-1) - 1) and
    M = width - 1 - E mantissa bits with an implicit leading one; exponent code 0 holds the
    subnormals. As MASE's `minifloat_ieee`, there are no infinities or NaNs: the largest
    value is 2**(2**E - 1 - bias) * (2 - 2**-M), and larger inputs saturate there. Rounding is
    to nearest, ties to even (MASE clamps the rounded mantissa instead of carrying into the
    next binade, so it rounds 1.99 with M = 2 to 1.75; bitscout gives 2.0)."""

    name: ClassVar[str] = "minifloat_ieee"

    @property
    def max_value(self) -> float:
        return 2.0**self.emax * (2 - 2.0**-self.mantissa)

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        v = x.double()
        q = float_grid(v.abs(), self.mantissa, 1 - self.bias, self.max_value)
        return torch.copysign(q, v).to(x.dtype)


@register_format
@dataclass(frozen=True)
class MinifloatDenorm(_Minifloat):
    """MASE's `minifloat_denorm`: the same fields, but no implicit leading bit, so it differs
    from `minifloat_ieee` in every binade, not only in the subnormals: the values are
    2**e * k / 2**M for e in [-bias, 2**E - 1 - bias] and k in 0..2**M - 1, and an input is
    placed by e = ceil(log2|x|), where the spacing is 2**(e - M). The largest value is
    2**emax * (1 - 2**-M). bitscout rounds to the nearest such value (ties to even k); MASE
    clamps k at 2**M - 1 first, so inputs just below a power of two round down."""

    name: ClassVar[str] = "minifloat_denorm"

    @property
    def max_value(self) -> float:
        return 2.0**self.emax * (1 - 2.0**-self.mantissa)

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        v = x.double()
        a = v.abs()
        # ceil(log2 a) = floor(log2 a) + 1 except at exact powers of two
        e = exponent_of(a) + (torch.frexp(a).mantissa != 0.5).to(a.dtype)
        e = torch.clamp(e, -self.bias, self.emax)
        step = torch.exp2(e - self.mantissa)
        q = torch.clamp(torch.round(a / step) * step, max=self.max_value)
        return torch.copysign(q, v).to(x.dtype)


@register_format
@dataclass(frozen=True)
class Log(NumberFormat):
    """MASE's `log`: ±2**e with e in [-bias, 2**(width-1) - 1 - bias] (a sign bit and width - 1
    exponent bits; bias default 2**(width-2) - 1). An input takes the power of two nearest in
    the log domain (|x| >= 2**(e + 1/2) goes up), clamped to the range. Zero is not a value:
    it becomes +2**-bias, as in MASE."""

    name: ClassVar[str] = "log"
    FIELDS: ClassVar[tuple[Field, ...]] = (width_field(2, 9), int_or_na("exponent_bias", -256, 256))

    width: int
    exponent_bias: int | None = None

    def _resolve(self) -> None:
        if self.exponent_bias is None:
            object.__setattr__(self, "exponent_bias", 2 ** (self.width - 2) - 1)
        _check_range(self.exponent_bias + 1, self.emax, 0)  # type: ignore[operator]

    @property
    def emin(self) -> int:
        return -self.exponent_bias  # type: ignore[operator]

    @property
    def emax(self) -> int:
        return 2 ** (self.width - 1) - 1 - self.exponent_bias

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        v = x.double()
        a = v.abs()
        e = exponent_of(a)
        # |x| >= 2**(e + 1/2) <=> x*x >= 2**(2e + 1): exact in float64 for float32 inputs
        e = e + (a * a >= torch.exp2(2 * e + 1)).to(a.dtype)
        e = torch.where(a == 0, float(self.emin), torch.clamp(e, self.emin, self.emax))
        sign = torch.where(v < 0, -1.0, 1.0).to(v.dtype)
        return (sign * torch.exp2(e)).to(x.dtype)
