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


def _check_bias(bias: int, top: int, step: int, kind: str) -> None:
    """Keep every value a float32: the largest binade `top - bias` at most float32's (2**127),
    the smallest step `step - bias` at least its smallest (2**-149)."""
    lo, hi = top - FLOAT32_MAX_EXP, step - FLOAT32_MIN_EXP
    why = "or values leave float32's range (largest binade 2**127, smallest step 2**-149)"
    if lo > hi:
        raise ConfigError("exponent_width", f"leaves no exponent_bias possible for {kind}, {why}")
    if not lo <= bias <= hi:
        raise ConfigError("exponent_bias", f"must be in {lo}..{hi} for {kind}, {why}", bias)


@dataclass(frozen=True)
class _Minifloat(NumberFormat):
    FIELDS: ClassVar[tuple[Field, ...]] = (
        width_field(3, 31),  # a sign, an exponent and a mantissa bit; 32 leaves float32
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
        kind = f"width {self.width}, exponent_width {self.exponent_width}"
        _check_bias(self.bias, 2**self.exponent_width - 1, self._step_offset, kind)

    @property
    def mantissa(self) -> int:
        return self.width - 1 - self.exponent_width

    @property
    def _step_offset(self) -> int:
        """The smallest step's exponent plus the bias."""
        return 1 - self.mantissa

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

    def grid(self) -> tuple[int, int]:
        # step 2**(1 - bias - M) (the subnormals'); the largest is (2**(M+1) - 1) steps of
        # the top binade, 2**(2**E - 2) subnormal steps each.
        top = (2 ** (self.mantissa + 1) - 1) * 2 ** (2**self.exponent_width - 2)
        return 1 - self.bias - self.mantissa, top

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
    def _step_offset(self) -> int:
        return -self.mantissa  # no implicit bit: the lowest binade's step is 2**(-bias - M)

    @property
    def max_value(self) -> float:
        return 2.0**self.emax * (1 - 2.0**-self.mantissa)

    def grid(self) -> tuple[int, int]:
        # step 2**(-bias - M); the largest is 2**M - 1 steps of the top binade's 2**(emax - M)
        return -self.bias - self.mantissa, (2**self.mantissa - 1) * 2 ** (self.emax + self.bias)

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
    the log domain (|x| >= 2**(e + 1/2) goes up), clamped to the range (±inf saturates to
    ±2**emax). Zero is not a value: it becomes +2**-bias, as in MASE. NaN stays NaN."""

    name: ClassVar[str] = "log"
    FIELDS: ClassVar[tuple[Field, ...]] = (width_field(2, 9), int_or_na("exponent_bias", -256, 256))

    width: int
    exponent_bias: int | None = None

    def _resolve(self) -> None:
        if self.exponent_bias is None:
            object.__setattr__(self, "exponent_bias", 2 ** (self.width - 2) - 1)
        top = 2 ** (self.width - 1) - 1
        _check_bias(self.exponent_bias, top, 0, f"width {self.width}")  # type: ignore[arg-type]

    @property
    def emin(self) -> int:
        return -self.exponent_bias  # type: ignore[operator]

    @property
    def emax(self) -> int:
        return 2 ** (self.width - 1) - 1 - self.exponent_bias

    def grid(self) -> tuple[int, int]:
        return self.emin, 2 ** (self.emax - self.emin)

    def quantize_values(self, x: torch.Tensor) -> torch.Tensor:
        v = x.double()
        a = v.abs()
        e = exponent_of(a)
        # |x| >= 2**(e + 1/2) <=> x*x >= 2**(2e + 1): exact in float64 for float32 inputs
        e = e + (a * a >= torch.exp2(2 * e + 1)).to(a.dtype)
        e = torch.where(a == 0, float(self.emin), torch.clamp(e, self.emin, self.emax))
        e = torch.where(torch.isinf(a), float(self.emax), e)  # saturates, as 3e38 does
        sign = torch.where(v < 0, -1.0, 1.0).to(v.dtype)
        return torch.where(torch.isnan(v), v, sign * torch.exp2(e)).to(x.dtype)
